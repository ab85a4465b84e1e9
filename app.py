"""The original server's way to start: `uvicorn app:app --host 0.0.0.0 --port 8000` from the repo root.

`MODEL_NAME` (a registry name, hub repository, ONNX directory or `.nemo` file) and the `AVIARY_*`
variables are read when uvicorn imports this module at start-up; models load in the app's lifespan.
"""

from aviary.api import create_app

app = create_app()
