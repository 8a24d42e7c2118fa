"""The serving session fixtures (a real champion, Bento and ``bentoml serve``), for checking
``deploy/prometheus/`` against the series a served model exports.

They are the serving tests' own (``ml_assets_tests/serve/conftest.py``), imported: pytest
registers an imported fixture again for this folder, so a session running both folders builds
a second champion, Bento and server (about 30 s, in the ``serve`` group's worker). One shared
instance would need these fixtures in a plugin that the root conftest loads.
"""

from ml_assets_tests.serve.conftest import (
    bento_builder_resource,
    built,
    champion,
    online_url,
    serve_home,
    server,
)

__all__ = ["bento_builder_resource", "built", "champion", "online_url", "serve_home", "server"]
