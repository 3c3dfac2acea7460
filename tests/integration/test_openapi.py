"""api/openapi.yaml parses, every $ref resolves, every route mxkeys serves is described, and Redocly lints it clean."""
import os
import re
import subprocess

import yaml

API = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "api")
ROUTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "api", "routes.c")


def resolve(ref, base_file):
    path, _, pointer = ref.partition("#")
    doc_file = os.path.join(os.path.dirname(base_file), path) if path else base_file
    node = yaml.safe_load(open(doc_file))
    for part in [p for p in pointer.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, doc_file


def walk(node, base_file, seen):
    if isinstance(node, dict):
        if "$ref" in node:
            key = (node["$ref"], base_file)
            if key not in seen:
                seen.add(key)
                target, target_file = resolve(node["$ref"], base_file)
                walk(target, target_file, seen)
        for value in node.values():
            walk(value, base_file, seen)
    elif isinstance(node, list):
        for value in node:
            walk(value, base_file, seen)


def test_openapi_parses_and_refs_resolve():
    root_file = os.path.join(API, "openapi.yaml")
    doc = yaml.safe_load(open(root_file))
    assert doc["openapi"].startswith("3.")
    walk(doc, root_file, set())


def test_every_route_is_described():
    doc = yaml.safe_load(open(os.path.join(API, "openapi.yaml")))
    described = set(doc["paths"])
    routes = re.findall(r'(CLIENT|ROOT)\((GET|POST|PUT|DELETE), "([^"]+)"', open(ROUTES).read())
    missing = []
    for scope, _method, path in routes:
        full = ("/_matrix/client/v3" + path) if scope == "CLIENT" else path
        if full not in described:
            missing.append(full)
    assert not missing, f"routes without an OpenAPI description: {sorted(set(missing))}"


LINT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "openapi-lint")


def test_redocly_lint_is_clean():
    """Redocly's recommended-strict rules (tools/openapi-lint/redocly.yaml): no error, no warning beyond the
    explained ignores. `./mxkeys test` runs `npm ci` in tools/openapi-lint first (the version is pinned there)."""
    cli = os.path.join(LINT_DIR, "node_modules", ".bin", "redocly")
    assert os.access(cli, os.X_OK), "redocly is not installed: run `npm ci` in tools/openapi-lint (./mxkeys test does)"
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true", NO_COLOR="1")
    r = subprocess.run([cli, "lint", "--format=stylish"], cwd=LINT_DIR, env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    # recommended-strict: a warning is an error too, so the exit status says it all.
    assert r.returncode == 0, f"redocly lint failed:\n{r.stdout}{r.stderr}"
