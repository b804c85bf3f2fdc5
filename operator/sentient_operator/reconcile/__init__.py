"""Reconcilers: from the cluster as the operator sees it to the children and status it should have.

- :mod:`.agent`, :mod:`.provider`, :mod:`.policy`: one reconciler per kind (gather inputs, call
  the pure builders in :mod:`sentient_operator.build`, apply, write status);
- :mod:`.children`: apply only what differs; :mod:`.agent_status`: conditions and Events;
- :mod:`.controller` and :mod:`.queue`: the work queue and its workers;
- :mod:`.cache`: the operator's in-memory view (kopf indexes);
- :mod:`.context`: all of the above built once from the settings and handed to kopf as ``memo``.

Handlers (:mod:`sentient_operator.handlers`) only route kopf events here.
"""
