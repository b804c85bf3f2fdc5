"""``sentient dev``'s dashboard in the browser, under ``/_dev/`` on the dev port.

``hub.py`` gathers what it shows (the proxy's requests, the runtime's capture bus, reloads,
config, metrics), ``feed.py`` follows a runtime worker's ``/_dev/bus``, ``routes.py``
serves the page, its JSON and its server-sent events; ``static/`` is the page itself
(plain HTML, CSS and JavaScript: no build step, nothing fetched from elsewhere).
"""
