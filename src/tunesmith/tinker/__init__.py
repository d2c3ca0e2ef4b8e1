"""The Tinker-compatible training API (issue 21): what the unmodified ``tinker`` SDK talks to.

So far :mod:`tunesmith.tinker.wire`, the request / response codec, and
:mod:`tunesmith.tinker.futures`, the request queue behind the SDK's futures. The ``tinker`` package
is an optional dependency (``pip install 'tunesmith[tinker]'``), imported lazily: tunesmith
imports without it.
"""
