"""A navigator_orchestrator-shaped example: the multi-year workforce simulation run between
ducksafe's pre_run (a verified backup) and post_run (rollback on failure).

Run it with examples/orchestrator/run_simulation.py; walkthrough in docs/integrations.md.
"""
