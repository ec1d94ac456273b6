"""ccm's benchmark harness: `make bench` sets up ccm, claude-code-router, LiteLLM and an nginx upstream, runs the
same workloads through each and writes docs/benchmarks.md and bench/results/latest.json (see bench/run.py)."""
