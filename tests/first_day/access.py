def may_act_as(request, tenant_id):
    """TENANT_ACCESS: a logged-in user, and a tenant this project has."""
    return request.user.is_authenticated and tenant_id in {"acme", "globex"}
