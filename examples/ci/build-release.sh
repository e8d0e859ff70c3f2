#!/bin/bash
# Build a fleetpkg release bundle in CI: one tarball plus its SHA-256, ready to upload as a single
# artifact. The build is sealed: every device's private key is inside secrets.tar.age, encrypted
# to the admins' age (or SSH) public keys, so the artifact holds no readable key. See docs/ci.md.
#
# Usage: build-release.sh FLEET_DIR OUT_DIR
#   FLEET_DIR  folder holding fleet.toml, devices.csv, the vendor package, CA files, device .pfx files
#   OUT_DIR    receives build.json (fleetpkg's machine-readable result), dist/ and release/
#
# Secrets come from the environment (the CI's secret store), never from arguments:
#   the variables fleet.toml names (password_env = "...", e.g. FLEET_PFX_PASSWORD,
#   INSTALLER_P12_PASSWORD, PROFILE_P12_PASSWORD) are read by fleetpkg itself;
#   INSTALLER_IDENTITY_P12_BASE64 / PROFILE_IDENTITY_P12_BASE64 (optional): the signing identities
#   as base64, written (mode 0600) to the paths fleet.toml names, given here as
#   INSTALLER_IDENTITY_PATH / PROFILE_IDENTITY_PATH relative to FLEET_DIR (defaults
#   signing/installer.p12 and signing/profiles.p12), and deleted when the build ends.
# Seal recipients (public keys, not secrets): fleet.toml's [secrets] recipients and/or
#   FLEETPKG_SEAL_TO, one age1... or ssh-ed25519/ssh-rsa public key per line. Without any, the step
#   refuses to run, unless FLEETPKG_UNSEALED=1 asks for readable keys in the artifact.
# Carrying unchanged Macs forward (so the MDMs see only what changed):
#   FLEETPKG_CI_AGE_KEY (a secret): the CI's own age key, the whole file `age-keygen -o` wrote. The
#   build is sealed to its public key too (read with age-keygen -y), besides the admins', and the
#   key opens the previous release's secrets.tar.age (written to a private file that fleetpkg is
#   told of through FLEETPKG_PREVIOUS_IDENTITY, deleted when the step ends).
#   FLEETPKG_PREVIOUS: the previous release as this step made it: a folder holding its
#   <name>.tar.gz (and .sha256, checked) directly or one level down (as `gh run download` puts
#   it), the tarball itself, or its unpacked bundle folder. A missing or empty folder (the first
#   release, an expired artifact) builds without one, and the build says every Mac is new.
# Other settings: FLEETPKG_CONFIG (default fleet.toml), FLEETPKG_JOBS, SOURCE_DATE_EPOCH
# (default: the last commit's time in FLEET_DIR when it is a git checkout, else now).
# Needs a Linux runner (GNU tar, coreutils sha256sum/base64) and python3.
# Exit status: fleetpkg's (1 a device fails the certificate rules, 2 input error, no seal
# recipient, or a previous release that is not what it claims), or 3 when the bundle does not
# match its own SHA256SUMS or is not sealed as asked.
set -euo pipefail
umask 077

die() {
    printf 'build-release: %s\n' "$*" >&2
    exit "${2:-2}"
}

[ $# -eq 2 ] || die "usage: build-release.sh FLEET_DIR OUT_DIR"
FLEET_DIR=$(cd "$1" && pwd) || die "no such folder: $1"
mkdir -p "$2"
OUT_DIR=$(cd "$2" && pwd)
CONFIG="$FLEET_DIR/${FLEETPKG_CONFIG:-fleet.toml}"
[ -f "$CONFIG" ] || die "no fleet configuration at $CONFIG"
command -v fleetpkg >/dev/null || die "fleetpkg is not installed (pip install fleetpkg)"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$FLEET_DIR" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Sealing: recipients from the environment (one per line) and from fleet.toml.
SEAL_ARGS=()
while IFS= read -r recipient; do
    recipient="${recipient%$'\r'}"
    [ -n "${recipient// /}" ] || continue
    SEAL_ARGS+=(--seal-to "$recipient")
done <<<"${FLEETPKG_SEAL_TO:-}"
config_recipients=$(python3 -c 'import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    print(len(tomllib.load(fh).get("secrets", {}).get("recipients", [])))' "$CONFIG") ||
    die "cannot read $CONFIG"
if [ "${#SEAL_ARGS[@]}" -eq 0 ] && [ "$config_recipients" -eq 0 ]; then
    [ "${FLEETPKG_UNSEALED:-}" = 1 ] ||
        die "no seal recipient: set FLEETPKG_SEAL_TO (age or SSH public keys, one per line) or [secrets] recipients in fleet.toml; FLEETPKG_UNSEALED=1 ships readable private keys instead"
    SEALED=0
else
    SEALED=1
fi

# Signing identities from the secret store: decoded to the paths fleet.toml expects, removed on exit;
# the CI's age key and the unpacked previous release live in a private folder, removed on exit too.
WRITTEN=()
PRIVATE=$(mktemp -d)
cleanup() {
    local file
    for file in "${WRITTEN[@]+"${WRITTEN[@]}"}"; do
        rm -f -- "$file"
    done
    rm -rf -- "$PRIVATE"
}
trap cleanup EXIT
chmod 700 "$PRIVATE"

decode_identity() {
    local value="$1" rel="$2" dest
    [ -n "$value" ] || return 0
    dest="$FLEET_DIR/$rel"
    [ ! -e "$dest" ] || die "$rel already exists in $FLEET_DIR: remove it or unset the identity variable"
    mkdir -p "$(dirname -- "$dest")"
    WRITTEN+=("$dest")
    printf '%s' "$value" | base64 -d >"$dest" || die "the base64 identity for $rel does not decode"
    chmod 600 "$dest"
}
decode_identity "${INSTALLER_IDENTITY_P12_BASE64:-}" "${INSTALLER_IDENTITY_PATH:-signing/installer.p12}"
decode_identity "${PROFILE_IDENTITY_P12_BASE64:-}" "${PROFILE_IDENTITY_PATH:-signing/profiles.p12}"

# The CI's own key: this build is sealed to it as well, and it opens the previous release.
if [ -n "${FLEETPKG_CI_AGE_KEY:-}" ]; then
    [ "$SEALED" = 1 ] || die "FLEETPKG_CI_AGE_KEY is set but the build is not sealed: give the admins' recipients too"
    command -v age-keygen >/dev/null || die "FLEETPKG_CI_AGE_KEY needs age-keygen to read its public key (apt-get install age)"
    printf '%s\n' "$FLEETPKG_CI_AGE_KEY" >"$PRIVATE/ci.agekey"
    ci_recipient=$(age-keygen -y "$PRIVATE/ci.agekey" 2>/dev/null) ||
        die "FLEETPKG_CI_AGE_KEY is not an age key: store the whole file age-keygen -o wrote"
    SEAL_ARGS+=(--seal-to "$ci_recipient")
    export FLEETPKG_PREVIOUS_IDENTITY="$PRIVATE/ci.agekey"
fi
unset FLEETPKG_CI_AGE_KEY

# The previous release: its bundle folder, to carry unchanged Macs forward from.
PREVIOUS_ARGS=()
previous_bundle() {
    local from="$1" tarball="" dir candidate found=()
    if [ -d "$from" ] && [ -f "$from/manifest.json" ]; then
        printf '%s\n' "$from"
        return 0
    fi
    if [ -d "$from" ]; then
        for candidate in "$from"/*.tar.gz "$from"/*/*.tar.gz; do
            [ ! -f "$candidate" ] || found+=("$candidate")
        done
        [ "${#found[@]}" -gt 0 ] || return 0  # no tarball: no previous release
        [ "${#found[@]}" -eq 1 ] || die "FLEETPKG_PREVIOUS: $from holds more than one release tarball"
        tarball="${found[0]}"
    elif [ -f "$from" ]; then
        tarball="$from"
    else
        return 0
    fi
    if [ -f "$tarball.sha256" ]; then
        (cd "$(dirname -- "$tarball")" && sha256sum --quiet -c "$(basename -- "$tarball").sha256" >&2) ||
            die "FLEETPKG_PREVIOUS: $tarball does not match its .sha256"
    fi
    mkdir "$PRIVATE/previous"
    tar -xzf "$tarball" -C "$PRIVATE/previous" || die "FLEETPKG_PREVIOUS: cannot unpack $tarball"
    for dir in "$PRIVATE/previous"/*/; do
        [ -f "$dir/manifest.json" ] && printf '%s\n' "${dir%/}" && return 0
    done
    die "FLEETPKG_PREVIOUS: $tarball holds no fleetpkg bundle"
}
if [ -n "${FLEETPKG_PREVIOUS:-}" ]; then
    bundle=$(previous_bundle "$FLEETPKG_PREVIOUS")
    if [ -n "$bundle" ]; then
        PREVIOUS_ARGS=(--previous "$bundle")
    else
        printf 'build-release: no previous release in %s: every Mac gets a new identity\n' "$FLEETPKG_PREVIOUS" >&2
    fi
fi

# The build: one JSON document on stdout (fleetpkg's contract), one error line on stderr.
args=(build "$CONFIG" --output "$OUT_DIR/dist" --json "${SEAL_ARGS[@]+"${SEAL_ARGS[@]}"}"
    "${PREVIOUS_ARGS[@]+"${PREVIOUS_ARGS[@]}"}")
if [ -n "${FLEETPKG_JOBS:-}" ]; then
    args+=(--jobs "$FLEETPKG_JOBS")
fi
rc=0
fleetpkg "${args[@]}" >"$OUT_DIR/build.json" || rc=$?
if [ "$rc" -ne 0 ]; then
    if [ -s "$OUT_DIR/build.json" ]; then
        python3 - "$OUT_DIR/build.json" <<'PY' >&2 || true
import json, sys
doc = json.load(open(sys.argv[1]))
print("build-release:", doc.get("error", "build failed"))
for device in doc.get("devices", []):
    if not device.get("ok", True):
        print("  failing device:", device.get("hostname"))
PY
    fi
    die "fleetpkg build failed (exit $rc)" "$rc"
fi

bundle=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["output"])' "$OUT_DIR/build.json")
[ -d "$bundle" ] || die "fleetpkg reported $bundle, which does not exist"
name=$(basename -- "$bundle")

# The bundle must match its own checksums, and be sealed when sealing was asked for, before it is shipped.
(cd "$bundle" && sha256sum --quiet -c SHA256SUMS) || die "$name does not match its SHA256SUMS" 3
if [ "$SEALED" = 1 ]; then
    python3 - "$OUT_DIR/build.json" <<'PY' || die "$name is not sealed: a secret file is readable in it" 3
import json, sys
doc = json.load(open(sys.argv[1]))
sys.exit(0 if doc.get("sealed") and all(a["sealed"] for a in doc["artifacts"] if a["secret"]) else 1)
PY
    [ -f "$bundle/secrets.tar.age" ] || die "$name has no secrets.tar.age" 3
fi
if fleetpkg verify --help >/dev/null 2>&1; then
    fleetpkg verify "$bundle" >&2 || die "fleetpkg verify found problems in $name" 3
fi

# One artifact: a reproducible tarball (sorted names, fixed owner and time) and its checksum.
mkdir -p "$OUT_DIR/release"
tarball="$OUT_DIR/release/$name.tar.gz"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C "$(dirname -- "$bundle")" -cf - "$name" | gzip -n -9 >"$tarball"
chmod 600 "$tarball"
(cd "$OUT_DIR/release" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
chmod 644 "$OUT_DIR/release/$name.tar.gz.sha256"

summary=$(python3 - "$OUT_DIR/build.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
s = doc["summary"]
secret = sum(1 for a in doc["artifacts"] if a["secret"])
kept = "sealed in secrets.tar.age" if doc.get("sealed") else "READABLE: not sealed"
print(f"{doc['fleet']} {doc['version']}: {s['ok']} of {s['devices']} devices built, "
      f"{s['warnings']} warning(s), {len(doc['artifacts'])} artifacts ({secret} secret, {kept})")
changes = doc.get("changes") or {}
if changes.get("previous"):
    d = changes["devices"]
    print(f"since {changes['previous']}: " + ", ".join(f"{len(d[k])} {k}" for k in ("added", "changed", "removed",
          "unchanged")) + f" Mac(s), wrapper {changes['wrapper']} (changes.json and DEPLOY.md say what to upload)")
for note in doc.get("notes", []) + doc.get("warnings", []):
    if "previous build" in note or "--previous-identity" in note:
        print(f"note: {note}")
for host in doc.get("skipped_devices", []):
    print(f"skipped: {host}")
PY
)
printf '%s\n' "$summary"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    {
        printf 'name=%s\n' "$name"
        printf 'tarball=%s\n' "$tarball"
        printf 'json=%s\n' "$OUT_DIR/build.json"
    } >>"$GITHUB_OUTPUT"
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    printf '### fleetpkg release\n\n~~~\n%s\n~~~\n' "$summary" >>"$GITHUB_STEP_SUMMARY"
fi
