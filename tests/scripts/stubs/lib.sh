#!/bin/bash
# Shared by the stub commands: record each call, then play a scripted response if one matches.
# Lives at /stubs/lib.sh inside the throwaway root; state under /stubs/state.
# Calls log: one line per call, fields separated by TAB: tool, then each argument.
# Responses: /stubs/responses/<tool>/<n>.args holds an argument prefix (space-joined); when the
# call's arguments start with it, <n>.out is printed, <n>.err goes to stderr, and the stub exits
# with <n>.rc (default 0). The first match in file-name order wins.
STUB_DIR=/stubs
STATE="$STUB_DIR/state"
export STATE

stub_record() {
    local line="$STUB_NAME" arg
    for arg in "$@"; do
        line="$line	$arg"
    done
    printf '%s\n' "$line" >>"$STUB_DIR/calls.log"
}

stub_respond() {
    local joined="$*" file prefix base rc
    for file in "$STUB_DIR/responses/$STUB_NAME"/*.args; do
        [ -f "$file" ] || continue
        prefix=$(cat "$file")
        case "$joined" in
            "$prefix"*)
                base="${file%.args}"
                if [ -f "$base.out" ]; then cat "$base.out"; fi
                if [ -f "$base.err" ]; then cat "$base.err" >&2; fi
                rc=0
                if [ -f "$base.rc" ]; then rc=$(cat "$base.rc"); fi
                exit "$rc"
                ;;
        esac
    done
}
