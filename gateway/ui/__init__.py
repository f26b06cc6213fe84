"""The dashboard: the page in static/ (HTML, CSS and ES modules, with the vendored libraries in static/vendor/),
served as it is by the daemon on the API's port; no build step and no Node on the box."""
