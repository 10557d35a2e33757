"""The stability watch: a plan, checkpoints, criteria judged at each one, a verdict.

``plan.toml ─► Watch(store, clock) ─► every checkpoint: snapshot ─► judge ─► reports``

* :mod:`steadyq.watch.plan`: the TOML plan, validated before anything runs;
* :mod:`steadyq.watch.measures`: the catalogue of measures, read from the event store;
* :mod:`steadyq.watch.sources`: the reader contract the measures use, and the platform
  sources that fill a store (gcloud exports, ``cloudrun://`` live);
* :mod:`steadyq.watch.judge`: criteria at each checkpoint, and the verdict;
* :mod:`steadyq.watch.run`: the run (live, resumed, or replayed) and its alerts;
* :mod:`steadyq.watch.reports`: ``report.md``, ``report.json``, ``report.html``;
* :mod:`steadyq.watch.views` / :mod:`steadyq.watch.observer`: the terminal views of a run;
* :mod:`steadyq.watch.init`: the incident's plan for a Cloud Run Job;
* :mod:`steadyq.watch.cli`: ``steadyq watch`` and ``steadyq watch init``.
"""
