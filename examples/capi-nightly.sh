#!/bin/sh
# capi-nightly.sh: capture the day's ad referrals, then send the day's orders, each exactly once.
export CAPI_HOME=/srv/capi                     # config, token file and ledger, for every command below
CAPI=/opt/capi/.venv/bin/capi                  # cron's PATH has no capi: its full path (`command -v capi`)
WEBHOOKS=/var/log/wa-webhooks                  # your webhook dumps (files or directories)
ORDERS=/srv/exports/orders-$(date +%F).csv     # the day's export

# 1. Capture. The referral table goes to a file, not to the mail; unreadable input (exit 1) is
#    logged and does not stop the send; anything worse (2, 3) stops here with a line for the mail.
"$CAPI" -q extract-referral "$WEBHOOKS" -o "$CAPI_HOME/referrals-last.ndjson" 2>>"$CAPI_HOME/capture.log"
status=$?
if [ "$status" -gt 1 ]; then
    echo "capi extract-referral failed (exit $status), see $CAPI_HOME/capture.log"
    exit "$status"
fi

# 2. Send. Silent on success; on failure the lines above the exit code say what to do.
"$CAPI" -q send --file "$ORDERS" --no-progress
status=$?
if [ "$status" -ne 0 ]; then
    echo "capi send: exit $status"
fi
exit "$status"
