# Shell helpers shared by the scripts that fetch from Debian's archive; sourced, not run.
# The sourcing script defines `die MESSAGE` (print and exit) first.

# Runs "$@" as root: directly when root, else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "'$*' needs root: run this script as root or install sudo"
    fi
}

# apt_download DEST PKG...: `apt-get download` of PKG... into the folder DEST (created).
# apt drops root to the _apt user for downloads, so as root the files land in a temporary
# folder that user may write, then move. Returns apt-get's status.
apt_download() {
    local dest=$1 tmp rc=0
    shift
    tmp=$(mktemp -d)
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
        chown _apt "$tmp"
    fi
    (cd "$tmp" && apt-get download -q "$@" >&2) || rc=$?
    if [ "$rc" = 0 ]; then
        mkdir -p "$dest"
        mv "$tmp"/*.deb "$dest/"
    fi
    rm -rf "$tmp"
    return "$rc"
}

# lock_dir DIR: holds DIR/.lock until the script exits, so that parallel runs (tests run in
# parallel) fetch and write one at a time. Uses file descriptor 9.
lock_dir() {
    if command -v flock >/dev/null; then
        exec 9>"$1/.lock"
        flock 9
    fi
}
