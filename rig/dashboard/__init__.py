"""The operator's live view of a session in a browser, with controls (``rig watch``, ``rig run --dashboard``).

- :mod:`rig.dashboard.live`: the session file read as it is written;
- :mod:`rig.dashboard.state`: what the page shows, as JSON;
- :mod:`rig.dashboard.images`: the images, regenerated from their codes;
- :mod:`rig.dashboard.channel`: requests from the viewer to the controller, and the controller's side;
- :mod:`rig.dashboard.security`: the token and who may look or act;
- :mod:`rig.dashboard.app` and :mod:`rig.dashboard.server`: the Starlette app and its uvicorn server;
- :mod:`rig.dashboard.beside`: a viewer started as its own process beside a run;
- ``static/``: the page (HTML, CSS, JS; no build step, no network).
"""
