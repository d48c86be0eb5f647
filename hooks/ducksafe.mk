# ducksafe.mk: pre-simulation targets for make (GNU make 3.81 or later).
#
# Install: keep hooks/ducksafe.mk and hooks/ducksafe-run together (a checkout of ducksafe, or a
# copy of both files in your project), put ducksafe on PATH (or set DUCKSAFE), then in your
# Makefile:
#
#   include path/to/hooks/ducksafe.mk
#
#   simulate:
#   	$(DUCKSAFE_GUARD) ./run_simulation.sh --years 2025 2026
#
# and call it as usual: `make simulate`, `make simulate DUCKSAFE_ON_FAILURE=restore`.
#
# $(DUCKSAFE_GUARD) prefixes a command with hooks/ducksafe-run: the database is backed up and
# verified first (the command does not start unless ducksafe answers `proceed`), then after the
# command post_run gets its exit code and, on failure, restores the backup when
# RESTORE_ON_FAILURE is true or DUCKSAFE_ON_FAILURE=restore. The recipe fails with the command's
# exit code, or the hook's when it refused the run; make itself then exits 2, so read
# $(DUCKSAFE_STATE_DIR)/TARGET/pre_run.json and post_run.json (decision, errors[].code) for the
# reason. Each target has its own folder, so that `make -j` never mixes two targets' responses:
# post_run.json exists exactly when the command was started, and its run.exit_code is the
# command's own. A Ctrl-C, `timeout` or hangup makes the run a failed run, restored when asked
# (docs/integrations.md, "Signals and timeouts").
#
# Targets: ducksafe-check (dry run: configuration, database, space; writes nothing),
# ducksafe-backup (a verified backup now), ducksafe-restore (put the latest backup back).
#
# Every variable can be set on the command line or in the environment.

DUCKSAFE ?= ducksafe
DUCKSAFE_CONFIG ?= config.yaml
# the responses of target T go to $(DUCKSAFE_STATE_DIR)/T/
DUCKSAFE_STATE_DIR ?= logs/ducksafe
# restore, keep, or empty for the configuration's RESTORE_ON_FAILURE
DUCKSAFE_ON_FAILURE ?=

DUCKSAFE_HOOKS_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
DUCKSAFE_RUN ?= $(DUCKSAFE_HOOKS_DIR)/ducksafe-run

DUCKSAFE_GUARD = '$(DUCKSAFE_RUN)' --ducksafe '$(DUCKSAFE)' --config '$(DUCKSAFE_CONFIG)' \
  --state-dir '$(DUCKSAFE_STATE_DIR)/$@' $(if $(DUCKSAFE_ON_FAILURE),--on-failure '$(DUCKSAFE_ON_FAILURE)') --

.PHONY: ducksafe-check ducksafe-backup ducksafe-restore

## Check the configuration, the database and the free space without writing anything
ducksafe-check:
	'$(DUCKSAFE)' --config '$(DUCKSAFE_CONFIG)' pre-run --dry-run

## Take a verified backup now; the response goes to $(DUCKSAFE_STATE_DIR)/ducksafe-backup/pre_run.json
ducksafe-backup:
	@mkdir -p '$(DUCKSAFE_STATE_DIR)/$@' && rm -f '$(DUCKSAFE_STATE_DIR)/$@/post_run.json'
	'$(DUCKSAFE)' --config '$(DUCKSAFE_CONFIG)' pre-run > '$(DUCKSAFE_STATE_DIR)/$@/pre_run.json' \
	  || { code=$$?; cat '$(DUCKSAFE_STATE_DIR)/$@/pre_run.json' >&2; exit $$code; }

## Put the latest backup back (the replaced database and WAL go to quarantine)
ducksafe-restore:
	'$(DUCKSAFE)' --config '$(DUCKSAFE_CONFIG)' restore latest
