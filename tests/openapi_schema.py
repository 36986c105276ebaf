"""Reading the served OpenAPI schema in tests: the document, its components, a component's alternatives.

Shared by the schema tests (``tests/test_api_schema.py``, ``tests/consent/test_schema.py``,
``tests/test_api_authorization.py``); schemathesis itself runs in ``tests/test_api_schema.py``
with the hooks of ``tests/schemathesis_hooks.py``.
"""

SCHEMA_URL = "/api/schema/?format=json"


def schema_served(client) -> dict:
    """The OpenAPI document the server serves now (the consent operation's part is read from the database)."""
    return client.get(SCHEMA_URL).json()


def schema_components(client) -> dict:
    """The served schema's component schemas, by name."""
    return schema_served(client)["components"]["schemas"]


def component_alternatives(schemas: dict, name: str) -> list[dict]:
    """A component's object schemas: itself, or each alternative of its oneOf (references resolved)."""
    schema = schemas[name]
    if "oneOf" not in schema:
        return [schema]
    return [schemas[item["$ref"].rsplit("/", 1)[1]] if "$ref" in item else item for item in schema["oneOf"]]
