"""The node API (spec/node.md): the backend drives this hostd over HTTP with a node token.

```
create_app(runtime, token)   routes (/node/v1/...) ─► Runtime / Sandbox / agent channel
                             errors.py: every error answer; deps.py: token check, sandbox lookup
```
The Runtime is started and closed by the caller (``isorun-hostd serve``), not by the app.
"""

from __future__ import annotations

from fastapi import FastAPI

from isorun_hostd.api import errors
from isorun_hostd.api.routes import router
from isorun_hostd.sandboxes import Runtime


def create_app(runtime: Runtime, token: str) -> FastAPI:
    """The node API over a started ``runtime``; requests must carry ``token``."""
    if not token:
        raise ValueError("a node API needs a node token")
    app = FastAPI(title="isorun-hostd node API", docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.token = token.encode()
    errors.install(app)
    app.include_router(router)
    return app
