"""The Tinker-compatible training API (issue 21): what the unmodified ``tinker`` SDK talks to.

:mod:`.host` (models, samplers, sessions: multi-LoRA on one loaded base), :mod:`.training`
(forward_backward and the Adam step), :mod:`.sampler` (sampling with log-probs),
:mod:`.store` (checkpoints, ``tinker://`` paths), :mod:`.futures` (the request queue behind the
SDK's futures) and :mod:`.wire` (the request / response codec). The routes live in
:mod:`tunesmith.jobs.routes_tinker`. The ``tinker`` package is an optional dependency
(``pip install 'tunesmith[tinker]'``), imported lazily: tunesmith imports without it.
"""
