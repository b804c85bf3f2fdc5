"""kind: the e2e tests where pods really run, and the offline image tooling they need.

``images`` builds every image (kind's node image too, where no registry is reachable);
``cluster`` creates the kind cluster and installs the chart; the ``test_*`` modules run only
against kind (``E2E_KIND=1``, set by ``make e2e-kind``).
"""
