"""The interop suite reuses the integration fixtures (throwaway PostgreSQL, mxkeysd, token minting) and helpers."""
import importlib.util
import os
import sys

_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration")
sys.path.insert(0, _INTEGRATION)  # olmkeys and friends

# Both suites call their fixture file conftest.py: load the integration one under its own name.
_spec = importlib.util.spec_from_file_location("mxkeys_integration_conftest", os.path.join(_INTEGRATION, "conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
globals().update({name: value for name, value in vars(_fixtures).items() if not name.startswith("__")})
