"""Secret rotation: for each secret of a rendered project, how scripts/rotate-secret.sh replaces it
(decided here once; the script gets the result as data and never looks at the answers)."""

from __future__ import annotations

from typing import Any

from .catalogue import OPERATOR_SECRETS

# Readers that use a secret file each time they need it: they see a value written in place at
# once (the db container's backups, Alertmanager's receiver credentials, the cache's health check).
READ_WHEN_USED = {"db", "alertmanager", "cache"}


def rotation_plan(f: Any, reads: dict[str, list[str]], services: dict[str, Any],
                  tls_files: list[str], store_files: list[str]) -> dict[str, dict[str, Any]]:
    """secret name -> {value: random|operator, server: db-roles|cache|"", app: bool,
    restart: [services recreated afterwards], remake: web config made from it, swarm_db: whether
    a Swarm's database task restarts for it, refused: why it cannot be rotated by the script}."""
    roles = {name: role for role, name in (f.db["passwords"].items() if f.db else [])}
    plan = {}
    for name, readers in reads.items():
        entry = {"value": "operator" if name in OPERATOR_SECRETS else "random", "server": "", "app": "app" in readers,
                 "remake": "", "swarm_db": "db" in readers, "refused": ""}
        restart = [r for r in readers if r in services and r != "app" and not services[r].one_off
                   and r not in READ_WHEN_USED]
        if roles.get(name) == "admin":
            entry["refused"] = ("db-roles and the scripts log in with it, and the database keeps the one it was created "
                                "with: set the new password in the database yourself (ALTER ROLE or ALTER USER), then "
                                "write it to the file")
        elif name in roles:
            entry["server"] = "db-roles"
        elif name == "redis_password":
            entry["server"] = "cache"
        elif name.endswith("_web_config"):
            entry["refused"] = f"it is made from {name.removesuffix('_web_config')}_password: rotate that one"
        elif name == "grafana_admin_password":
            entry["refused"] = ("Grafana keeps its admin password in its own database after the first start: "
                                "grafana cli admin reset-admin-password in the grafana container, then write the file")
        elif name in ("prometheus_password", "alertmanager_password"):
            user = name.removesuffix("_password")
            entry["remake"] = f"{user}_web_config"
            restart = [user] + [r for r in restart if r != user]
        entry["restart"] = restart
        plan[name] = entry
    for name in tls_files:
        plan[name] = {"value": "operator", "server": "", "app": False, "remake": "", "swarm_db": False, "restart": [],
                      "refused": "a certificate and its key change together: replace tls_cert and tls_key, then "
                                 "scripts/compose.sh ENV up --detach --force-recreate proxy"}
    for name in store_files:
        plan[name] = {"value": "operator", "server": "", "app": False, "remake": "", "swarm_db": False, "restart": [],
                      "refused": "CloudNativePG reads it from its Kubernetes Secret: make a new key in the object store, "
                                 "write it to the file, then scripts/deploy.sh ENV (the operator reloads the Secret)"}
    return plan
