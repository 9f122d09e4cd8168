"""The operator page in the Django admin: permissions, the numbers, a lookup, a bump, a flush.

Through Django's test client (permissions, CSRF, what a bump and a flush do to
cached entries) and through a real headless Chromium (Selenium on
``/usr/bin/chromedriver``) driving a live server: log in, pick a tenant, bump a
tag with its confirmation. The store is ``FKD_ADMIN_STORE`` (db or redis).
A missing Chromium fails the test: it never skips.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client, override_settings

from fragmented_keys_django import TenantContext

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/admin/fragmented_keys_django/cacheoperations/"
BUMP = PAGE + "bump/"
FLUSH = PAGE + "flush/"
TAGS = [("Project", "7")]


@pytest.fixture(autouse=True)
def store():
    call_command("createcachetable", verbosity=0)
    caches["default"].clear()
    yield caches["fragmented"]


def user(name: str, *, staff: bool = True, allowed: bool = False) -> User:
    made = User.objects.create_user(name, password="pw-" + name, is_staff=staff)
    if allowed:
        made.user_permissions.add(Permission.objects.get(codename="operate_cache"))
    return made


def client_for(made: User | None, **kwargs) -> Client:
    client = Client(**kwargs)
    if made is not None:
        client.force_login(made)
    return client


def cache_in(tenant: str, key: str = "report", value: str = "v") -> None:
    with TenantContext.use_tenant(tenant):
        caches["fragmented"].set_with_tags(key, value, TAGS)


def cached(tenant: str, key: str = "report"):
    with TenantContext.use_tenant(tenant):
        return caches["fragmented"].get_with_tags(key, TAGS)


# -- permissions ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [PAGE, BUMP, FLUSH])
def test_anonymous_users_are_sent_to_the_login_page(url):
    response = Client().get(url, {"alias": "fragmented", "tenant": "acme", "tag": "Project"})
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", [PAGE, BUMP, FLUSH])
def test_staff_without_the_permission_get_403_and_nothing_is_bumped(url):
    cache_in("acme")
    client = client_for(user("clerk"))
    params = {"alias": "fragmented", "tenant": "acme", "tag": "Project", "instance": "7"}
    assert client.get(url, params).status_code == 403
    assert client.post(url, params).status_code == 403
    assert cached("acme") == "v"


def test_non_staff_users_with_the_permission_are_sent_to_the_login_page():
    client = client_for(user("outsider", staff=False, allowed=True))
    response = client.get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_page_is_on_the_admin_index_for_operators_only():
    assert "Tenant cache" in client_for(user("op", allowed=True)).get("/admin/").text
    assert "Tenant cache" not in client_for(user("clerk")).get("/admin/").text


# -- the page ------------------------------------------------------------------------


def test_the_page_shows_hit_ratio_backlog_and_a_tag_version():
    tenant = "counted"  # the metrics count since start: a tenant no other test reads
    cache_in(tenant)
    assert cached(tenant) == "v"  # a hit
    with TenantContext.use_tenant(tenant):
        assert caches["fragmented"].get_with_tags("other", TAGS) is None  # a miss
        version = caches["fragmented"].get_tag_version("Project", "7")
    client = client_for(user("op", allowed=True))
    page = client.get(
        PAGE, {"alias": "fragmented", "tenant": tenant, "tag": "Project", "instance": "7"}
    )
    assert page.status_code == 200
    html = page.text
    assert "Tenant counted on alias fragmented" in html
    assert re.search(r'id="fkd-hit-ratio">\s*50% &mdash; 1 hit, 1 miss\s', html), html
    assert "0 failed bumps retried by this process; 0 outbox rows" in html
    assert f"<code>{version}</code>" in html and version != 0


def test_bump_asks_for_confirmation_then_bumps_in_that_tenant_only():
    cache_in("acme")
    cache_in("globex")
    client = client_for(user("op", allowed=True), enforce_csrf_checks=True)
    params = {"alias": "fragmented", "tenant": "acme", "tag": "Project", "instance": "7"}
    confirm = client.get(BUMP, params)
    assert confirm.status_code == 200
    assert "Bump <strong>tag Project:7</strong> in tenant <strong>acme</strong>" in confirm.text
    assert cached("acme") == "v"  # a GET changes nothing
    assert client.post(BUMP, params).status_code == 403  # no CSRF token: refused
    assert cached("acme") == "v"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', confirm.text).group(1)
    done = client.post(BUMP, {**params, "csrfmiddlewaretoken": token}, follow=True)
    assert done.status_code == 200
    assert "Bumped tag Project:7 in tenant acme on alias fragmented." in done.text
    assert cached("acme") is None  # the entry that depended on the tag misses now
    assert cached("globex") == "v"  # another tenant's entry with the same tag does not
    assert re.search(r"UTC</td><td>Project:7</td>", done.text), "not among the recent bumps"


def test_flush_asks_for_confirmation_then_flushes_the_tenant():
    cache_in("acme")
    cache_in("acme", key="untagged")
    cache_in("globex")
    client = client_for(user("op", allowed=True))
    params = {"alias": "fragmented", "tenant": "acme"}
    confirm = client.get(FLUSH, params)
    assert "Flush <strong>every entry</strong> of tenant <strong>acme</strong>" in confirm.text
    assert cached("acme") == "v"
    done = client.post(FLUSH, params, follow=True)
    assert "Flushed tenant acme on alias fragmented." in done.text
    assert cached("acme") is None and cached("acme", "untagged") is None
    assert cached("globex") == "v"
    assert "tenant flush</td>" in done.text


def test_bad_input_is_reported_not_bumped():
    cache_in("acme")
    client = client_for(user("op", allowed=True))
    bad_alias = client.post(
        BUMP, {"alias": "nope", "tenant": "acme", "tag": "Project"}, follow=True
    )
    assert bad_alias.text.count("Alias &#x27;nope&#x27; is not a fragmented alias") == 1
    no_tag = client.post(BUMP, {"alias": "fragmented", "tenant": "acme", "tag": ""}, follow=True)
    assert 'class="error"' in no_tag.text
    no_tenant = client.post(FLUSH, {"alias": "fragmented", "tenant": " "}, follow=True)
    assert "Choose a tenant" in no_tenant.text
    assert cached("acme") == "v"


def test_a_tenant_no_source_knows_is_refused_as_the_commands_refuse_it():
    """A typo ("acmee") is not flushed, as ``fk_flush_tenant --tenant acmee`` refuses it."""
    cache_in("acme")
    client = client_for(user("op", allowed=True))
    with override_settings(FRAGMENTED_KEYS_MIDDLEWARE={"TENANTS": {"acme", "globex"}}):
        typo = client.post(FLUSH, {"alias": "fragmented", "tenant": "acmee"}, follow=True)
        assert "Unknown tenant &#x27;acmee&#x27;" in typo.text
        assert "Flushed" not in typo.text
        page = client.get(PAGE, {"alias": "fragmented", "tenant": "acmee"})
        assert "Unknown tenant &#x27;acmee&#x27;" in page.text
        done = client.post(FLUSH, {"alias": "fragmented", "tenant": "acme"}, follow=True)
        assert "Flushed tenant acme on alias fragmented." in done.text
    assert cached("acme") is None


# -- a real browser --------------------------------------------------------------------


def chromium():
    """Headless Chromium through Debian's chromedriver (fails, never skips, when missing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path("/usr/bin/chromedriver").exists(), (
        "chromedriver is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_in_chromium_login_pick_a_tenant_bump_with_confirmation(live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    user("op", allowed=True)
    cache_in("acme")
    cache_in("globex")
    browser = chromium()
    # A click returns before the next page is there: wait for what it must show.
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(live_server.url + PAGE)
        wait.until(ec.presence_of_element_located((By.NAME, "username")))
        assert "/admin/login/" in browser.current_url  # not logged in yet
        browser.find_element(By.NAME, "username").send_keys("op")
        browser.find_element(By.NAME, "password").send_keys("pw-op")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "fkd-tenant-form")))
        assert browser.current_url.endswith(PAGE), browser.current_url

        browser.find_element(By.ID, "fkd-tenant").send_keys("acme")
        browser.find_element(By.ID, "fkd-show").click()
        summary = wait.until(ec.presence_of_element_located((By.ID, "fkd-summary")))
        assert "Tenant acme on alias fragmented" in summary.text

        browser.find_element(By.ID, "fkd-tag-name").send_keys("Project")
        browser.find_element(By.ID, "fkd-tag-instance").send_keys("7")
        browser.find_element(By.ID, "fkd-bump").click()
        wait.until(ec.presence_of_element_located((By.ID, "fkd-confirm")))
        assert "Are you sure?" in browser.title
        assert cached("acme") == "v"  # nothing bumped before the confirmation
        browser.find_element(By.ID, "fkd-confirm").click()

        done = (By.CSS_SELECTOR, ".messagelist")
        wait.until(ec.text_to_be_present_in_element(done, "Bumped tag Project:7 in tenant acme"))
        assert cached("acme") is None
        assert cached("globex") == "v"
        recent = browser.find_element(By.ID, "fkd-recent").text
        assert "Project:7" in recent
        # The docs' screenshot: FKD_OPERATOR_SCREENSHOT=docs/img/operator-page.png.
        shot = os.environ.get("FKD_OPERATOR_SCREENSHOT") or str(tmp_path / "operator-page.png")
        assert browser.save_screenshot(shot)
    finally:
        browser.quit()
