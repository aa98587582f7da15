#!/bin/bash
# Install, upgrade or remove this machine's troupe bot: Raspberry Pi OS Bookworm, Debian, Ubuntu.
#
# Safe to run again: each step looks before it acts, and the service restarts only when
# something changed. See docs/install.md for the whole walk from zero to a bot answering.
set -euo pipefail
umask 022

usage() {
	cat <<'EOF'
usage: sudo deploy/install.sh [options]

Installs troupe into a venv of its own, /opt/troupe/releases/VERSION, with the link
/opt/troupe/venv pointing at it; a `troupe` system user (in the gpio group); /etc/troupe
for the federation file and this bot's tokens (mode 0600); the systemd service `troupe`
that runs `python -m troupe run --config /etc/troupe/federation.yaml`; and, for updates
from chat, the root unit troupe-update@.service with the polkit rule 50-troupe.rules.

  --source SPEC        what pip installs: a wheel file, a source directory, a git URL
                       (git+https://HOST/REPO@REF) or a requirement such as troupe==0.2.0
                       (default: $TROUPE_SOURCE, else the checkout this script is in)
  --index-url URL      the package index to install from (with a requirement as SPEC)
  --bot NAME           this bot's name in the federation (default: the short host name)
  --federation FILE    copy FILE to /etc/troupe/federation.yaml (else a starter file is
                       written when there is none)
  --bot-token-file F   copy this bot's xoxb- token from the file F
  --app-token-file F   copy this bot's xapp- token from the file F
                       (without them, install.sh asks on the terminal for a missing
                       token; a token is never taken from the command line)
  --python PATH        the Python 3.11+ to build the venv with (default: /usr/bin/python3)
  --system-site-packages
                       let the venv see the system's Python packages (the default on a
                       Raspberry Pi, so gpiozero finds python3-lgpio)
  --pip-args "ARGS"    more arguments for pip install (e.g. "--no-deps --no-index")
  --no-start           install and enable the service, but do not start it now
  --root DIR           install into DIR as if it were / : no user, no apt, no systemd
                       (for CI and for looking at what gets installed)
  --dry-run            print each action instead of doing it
  --uninstall          remove the services, the polkit rule, /opt/troupe (every release)
                       and troupe.env; keep the federation file, the tokens, the journal
                       and the user
  --purge              with --uninstall: remove /etc/troupe, /var/lib/troupe and the user too
  -h, --help           show this help
EOF
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly USER_NAME=troupe
readonly ETC=/etc/troupe
readonly STATE=/var/lib/troupe
readonly OPT=/opt/troupe
readonly RELEASES=/opt/troupe/releases
readonly STAGING=/opt/troupe/releases/.staging
# The link the service runs from (troupe.update's Layout(/opt/troupe, current_name="venv")).
readonly VENV=/opt/troupe/venv
readonly PREVIOUS=/opt/troupe/previous
readonly MARKER=.troupe-installed
readonly SOURCE_NOTE=.troupe-source
readonly UNIT=/etc/systemd/system/troupe.service
readonly UPDATE_UNIT=/etc/systemd/system/troupe-update@.service
readonly POLKIT_RULES=/etc/polkit-1/rules.d
readonly RULE=/etc/polkit-1/rules.d/50-troupe.rules
readonly POLKITD=/usr/lib/polkit-1/polkitd
readonly LINK=/usr/local/bin/troupe
# The line that tells troupe's wrapper in /usr/local/bin from anyone else's file.
readonly WRAPPER_MARK="written by deploy/install.sh"

R=""
DRY_RUN=0
UNINSTALL=0
PURGE=0
START=1
SITE_PACKAGES=""
SOURCE=${TROUPE_SOURCE:-}
INDEX_URL=""
BOT=""
FEDERATION=""
BOT_TOKEN_FILE=""
APP_TOKEN_FILE=""
# The system's Python by default: one under root's home (pyenv, conda) is out of troupe's reach.
PYTHON=python3
if [[ -x /usr/bin/python3 ]]; then
	PYTHON=/usr/bin/python3
fi
PIP_ARGS=""
CHANGES=0
MISSING=()
WORK=""
RELEASE=""

die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

say() { printf '%s\n' "$*"; }

quoted() {
	local out
	printf -v out '%q ' "$@"
	printf '%s' "${out% }"
}

# Run a command that changes the system, or with --dry-run only say so.
act() {
	CHANGES=$((CHANGES + 1))
	if ((DRY_RUN)); then
		say "would run: $(quoted "$@")"
		return 0
	fi
	say "+ $(quoted "$@")"
	"$@"
}

# Like act, for what lies outside the installed files (users, apt, systemd): a --root
# install has no system of its own to change, so these are only reported.
host_act() {
	if [[ -n $R ]]; then
		say "skip (--root): $(quoted "$@")"
		return 0
	fi
	act "$@"
}

# Run a command that changes nothing that counts (reload, enable), or print it.
quiet_act() {
	if ((DRY_RUN)); then
		say "would run: $(quoted "$@")"
		return 0
	fi
	say "+ $(quoted "$@")"
	"$@"
}

need_value() {
	[[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

parse_args() {
	while [[ $# -gt 0 ]]; do
		case $1 in
		--source) need_value "$@"; SOURCE=$2; shift 2 ;;
		--index-url) need_value "$@"; INDEX_URL=$2; shift 2 ;;
		--bot) need_value "$@"; BOT=$2; shift 2 ;;
		--federation) need_value "$@"; FEDERATION=$2; shift 2 ;;
		--bot-token-file) need_value "$@"; BOT_TOKEN_FILE=$2; shift 2 ;;
		--app-token-file) need_value "$@"; APP_TOKEN_FILE=$2; shift 2 ;;
		--python) need_value "$@"; PYTHON=$2; shift 2 ;;
		--pip-args) need_value "$@"; PIP_ARGS=$2; shift 2 ;;
		--root) need_value "$@"; R=$2; shift 2 ;;
		--system-site-packages) SITE_PACKAGES=1; shift ;;
		--no-start) START=0; shift ;;
		--dry-run) DRY_RUN=1; shift ;;
		--uninstall) UNINSTALL=1; shift ;;
		--purge) PURGE=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option $1 (see --help)" ;;
		esac
	done
	if ((PURGE && !UNINSTALL)); then
		die "--purge goes with --uninstall"
	fi
	if [[ -n ${TROUPE_BOT_TOKEN:-}${TROUPE_APP_TOKEN:-} ]]; then
		die "install.sh no longer reads tokens from TROUPE_BOT_TOKEN/TROUPE_APP_TOKEN (they end up in shell history); use --bot-token-file F, --app-token-file F or the prompt"
	fi
	if [[ -n $R ]]; then
		[[ $R == /* ]] || R=$PWD/$R
		R=${R%/}
		[[ -n $R ]] || die "--root / is the machine itself; leave --root out"
		if ((!DRY_RUN)); then
			mkdir -p "$R"
		fi
	elif ((!DRY_RUN)) && [[ $EUID -ne 0 ]]; then
		die "run as root (sudo $0 ...), or try --dry-run or --root DIR"
	fi
}

# --- looking before acting -------------------------------------------------------------

mode_of() { stat -c %a "$1"; }
owner_of() { stat -c %U:%G "$1"; }

# Give PATH (under the root) MODE and, outside a --root install, OWNER.
ensure_perms() {
	local path=$R$1 mode=$2 owner=$3
	if [[ ! -e $path ]]; then
		((DRY_RUN)) || die "$path is missing"
		return 0
	fi
	if [[ $(mode_of "$path") != "${mode#0}" ]]; then
		act chmod "$mode" "$path"
	fi
	if [[ -z $R && $(owner_of "$path") != "$owner" ]]; then
		act chown "$owner" "$path"
	fi
}

ensure_dir() {
	local dir=$1 mode=$2 owner=$3
	if [[ -d $R$dir ]]; then
		ensure_perms "$dir" "$mode" "$owner"
	elif [[ -n $R ]]; then
		act install -d -m "$mode" "$R$dir"
	else
		act install -d -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$dir"
	fi
}

# Write stdin to DEST like put_file, staging it in a private directory (mode 0700).
put_text() {
	if [[ -z $WORK ]]; then
		WORK=$(mktemp -d)
		trap 'rm -rf "$WORK"' EXIT
	fi
	local staged
	staged=$(mktemp "$WORK/text.XXXXXX")
	cat >"$staged"
	put_file "$staged" "$@"
	rm -f "$staged"
}

# Copy SRC to DEST (a path under the root) when they differ, through a temporary file so a
# reader never sees half a file; then give DEST its mode and owner. Never prints content.
put_file() {
	local src=$1 dest=$2 mode=$3 owner=$4 target=$R$2 tmp
	if [[ -f $target ]] && cmp -s "$src" "$target"; then
		ensure_perms "$dest" "$mode" "$owner"
		return 0
	fi
	CHANGES=$((CHANGES + 1))
	[[ -z $R ]] || owner="owner left as is"
	if ((DRY_RUN)); then
		say "would write: $target (mode $mode, $owner)"
		return 0
	fi
	say "+ write $target (mode $mode, $owner)"
	tmp=$(mktemp "$target.XXXXXX")
	cat "$src" >"$tmp"
	chmod "$mode" "$tmp"
	if [[ -z $R ]]; then
		chown "$owner" "$tmp"
	fi
	mv -f "$tmp" "$target"
}

systemd_running() { [[ -z $R && -d /run/systemd/system ]]; }

# --- installing ------------------------------------------------------------------------

check_python() {
	command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install python3 or pass --python"
	"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "troupe needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1) (Raspberry Pi OS and Debian Bookworm, Ubuntu 24.04 have it)"
}

pick_source() {
	if [[ -z $SOURCE ]]; then
		if [[ -f $SCRIPT_DIR/../pyproject.toml ]] &&
			grep -q '^name = "troupe"' "$SCRIPT_DIR/../pyproject.toml"; then
			SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
		else
			die "say what to install with --source (a wheel, a git URL, or troupe==VERSION)"
		fi
	fi
	if [[ $SOURCE == *.whl && ! -f $SOURCE ]]; then
		die "no wheel at $SOURCE"
	fi
}

polkit_installed() { [[ -x $POLKITD ]]; }

on_a_pi() {
	[[ -z $R && -r /proc/device-tree/model ]] &&
		tr -d '\0' </proc/device-tree/model | grep -q 'Raspberry Pi'
}

install_packages() {
	local wanted=()
	"$PYTHON" -c 'import ensurepip' 2>/dev/null || wanted+=(python3-venv)
	if [[ $SOURCE == git+* ]] && ! command -v git >/dev/null; then
		wanted+=(git)
	fi
	if [[ -n $SITE_PACKAGES ]] && on_a_pi && ! "$PYTHON" -c 'import lgpio' 2>/dev/null &&
		apt-cache show python3-lgpio >/dev/null 2>&1; then
		wanted+=(python3-lgpio)
	fi
	# `update` and `restart` from chat go through polkit (50-troupe.rules): polkitd is small
	# (Bookworm, Ubuntu 24.04), so it comes along when apt has it; else ensure_rule says so.
	if [[ -z $R ]] && ! polkit_installed && apt-cache show polkitd >/dev/null 2>&1; then
		wanted+=(polkitd)
	fi
	if ((${#wanted[@]})); then
		host_act apt-get update
		host_act apt-get install -y --no-install-recommends "${wanted[@]}"
	fi
}

ensure_user() {
	if [[ -n $R ]]; then
		say "skip (--root): user $USER_NAME and the gpio group"
		return 0
	fi
	if ! getent passwd "$USER_NAME" >/dev/null; then
		act useradd --system --user-group --home-dir "$STATE" --no-create-home \
			--shell /usr/sbin/nologin --comment "troupe bot" "$USER_NAME"
	fi
	if getent group gpio >/dev/null; then
		if ! id -nG "$USER_NAME" 2>/dev/null | tr ' ' '\n' | grep -qx gpio; then
			act usermod -a -G gpio "$USER_NAME"
		fi
	else
		say "note: no gpio group here (not a Raspberry Pi?); GPIO devices stay out of reach"
	fi
}

# --- the release: a venv per troupe version ----------------------------------------------
#
# /opt/troupe/releases/VERSION holds one venv per version, /opt/troupe/venv links to the
# one in use and /opt/troupe/previous to the one before: the layout troupe.update keeps
# when it updates from chat. The version is what pip installs, known only once it has:
# pip builds into releases/.staging, which is then renamed releases/VERSION. That is
# sturdier than asking `pip install --dry-run --report` first: pip resolves once, so the
# release is named after what was installed even when a branch, an unpinned requirement
# or an index moves in between; no JSON report format to depend on; and the release in
# use is never touched while pip works. Renaming a venv is safe for troupe: the service,
# the updater and /usr/local/bin/troupe all run `VENV/bin/python -m troupe`, and the
# paths pip wrote into bin/ (script first lines, activate) are rewritten on the way.

# A fingerprint of what is installed in venv DIR, to tell whether a new build differs:
# its pyvenv.cfg, each distribution's name and version, and the hash of every file of
# troupe's own (not the scripts in bin/, whose first line names the venv's path).
venv_state() {
	local dir=$1 site
	{
		grep -v '^command' "$dir/pyvenv.cfg" 2>/dev/null || true
		for site in "$dir"/lib/python3*/site-packages; do
			[[ -d $site ]] || continue
			(cd "$site" && ls -d -- *.dist-info && grep -hv '^\.\./' troupe-*.dist-info/RECORD) \
				2>/dev/null || true
		done
	} | sha256sum
}

# What pins the source down, so that a rerun finds the release it built last time without
# running pip: a wheel's or sdist's hash, or an exact requirement (troupe==0.2.0). Nothing
# for a directory, a git ref or an open requirement, which pip must look at again.
source_fingerprint() {
	local what python
	if [[ -f $SOURCE && ($SOURCE == *.whl || $SOURCE == *.tar.gz || $SOURCE == *.zip) ]]; then
		what="file sha256 $(sha256sum <"$SOURCE" | cut -d' ' -f1)"
	elif [[ $SOURCE =~ ^[A-Za-z0-9._-]+(\[[A-Za-z0-9,._-]*\])?==[A-Za-z0-9.!+_-]+$ ]]; then
		what="requirement $SOURCE"
	else
		return 0
	fi
	python=$("$PYTHON" -c 'import sys; print(sys.executable, "%d.%d" % sys.version_info[:2])')
	printf 'source: %s\nindex-url: %s\npip-args: %s\npython: %s\nsystem-site-packages: %s\n' \
		"$what" "$INDEX_URL" "$PIP_ARGS" "$python" "${SITE_PACKAGES:-0}"
}

# Release DIR is whole: its marker names it, and its Python (3.11+) imports troupe.
release_works() {
	local dir=$1
	[[ -f $dir/$MARKER && $(<"$dir/$MARKER") == "${dir##*/}" ]] &&
		"$dir/bin/python" -I -B -c 'import sys, troupe; sys.exit(sys.version_info < (3, 11))' \
			2>/dev/null
}

# The release an earlier run built from the same pinned source, if it is still whole.
release_from() {
	local fingerprint=$1 dir
	for dir in "$R$RELEASES"/*/; do
		dir=${dir%/}
		if [[ -f $dir/$SOURCE_NOTE && $(<"$dir/$SOURCE_NOTE") == "${fingerprint%$'\n'}" ]] &&
			release_works "$dir"; then
			printf '%s\n' "${dir##*/}"
			return 0
		fi
	done
	return 1
}

# Rewrite the path OLD to NEW in venv DIR's bin/ scripts (first lines, activate) and pyvenv.cfg.
relocate() {
	local dir=$1 old=$2 new=$3 file text
	while IFS= read -r file; do
		[[ -f $file && ! -L $file ]] || continue
		text=$(
			cat -- "$file"
			printf x
		)
		text=${text%x}
		printf '%s' "${text//"$old"/"$new"}" >"$file"
	done < <(grep -lIF -- "$old" "$dir"/bin/* "$dir/pyvenv.cfg" 2>/dev/null || true)
}

ensure_release() {
	local fingerprint found
	ensure_dir "$RELEASES" 0755 root:root
	fingerprint=$(source_fingerprint)
	if [[ -n $fingerprint ]] && found=$(release_from "$fingerprint"); then
		RELEASE=$found
		say "troupe $RELEASE from $SOURCE is installed already: $R$RELEASES/$RELEASE"
		return 0
	fi
	build_release "$fingerprint"
}

build_release() {
	local fingerprint=$1 stage=$R$STAGING py=$R$STAGING/bin/python version dest
	local -a pip_args venv_args=()
	read -r -a pip_args <<<"$PIP_ARGS"
	if [[ -n $INDEX_URL ]]; then
		pip_args+=(--index-url "$INDEX_URL")
	fi
	if [[ -n $SITE_PACKAGES ]]; then
		venv_args+=(--system-site-packages)
	fi
	if [[ -e $stage || -L $stage ]]; then
		quiet_act rm -rf "$stage" # left by a run that stopped half-way
	fi
	quiet_act "$PYTHON" -m venv "${venv_args[@]}" "$stage"
	# A source directory with a requirements.lock (make lock) gets its dependencies exactly
	# as locked, each file checked against its hash; troupe itself then goes in alone.
	if [[ -d $SOURCE && -f $SOURCE/requirements.lock && " $PIP_ARGS " != *" --no-deps "* ]]; then
		quiet_act "$py" -m pip install --no-input --disable-pip-version-check --require-hashes \
			"${pip_args[@]}" -r "$SOURCE/requirements.lock" ||
			die "pip could not install the locked dependencies in $SOURCE/requirements.lock (its message is above); fix the index or the network and run install.sh again"
		pip_args+=(--no-deps)
	fi
	quiet_act "$py" -m pip install --upgrade --no-input --disable-pip-version-check \
		"${pip_args[@]}" "$SOURCE" ||
		die "pip could not install $SOURCE (its message is above); fix the source, the index or the network and run install.sh again"
	if ((DRY_RUN)); then
		RELEASE=VERSION
		say "would move $stage to $R$RELEASES/$RELEASE, VERSION being the troupe pip installed"
		CHANGES=$((CHANGES + 1))
		return 0
	fi
	version=$("$py" -I -c 'import importlib.metadata as m; print(m.version("troupe"))') ||
		die "$SOURCE did not install a package named troupe; pass --source with troupe's wheel, checkout or requirement"
	[[ $version =~ ^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$ ]] ||
		die "pip installed troupe '$version', which cannot name a release; install a released version of troupe"
	printf '%s\n' "$version" >"$stage/$MARKER"
	if [[ -n $fingerprint ]]; then
		printf '%s\n' "$fingerprint" >"$stage/$SOURCE_NOTE"
	fi
	dest=$R$RELEASES/$version
	RELEASE=$version
	if release_works "$dest" && [[ $(venv_state "$dest") == "$(venv_state "$stage")" ]]; then
		say "troupe $version from $SOURCE is installed already: $dest"
		if [[ -n $fingerprint ]] && ! cmp -s "$stage/$SOURCE_NOTE" "$dest/$SOURCE_NOTE"; then
			cp "$stage/$SOURCE_NOTE" "$dest/$SOURCE_NOTE" # so the next run need not build
		fi
		quiet_act rm -rf "$stage"
		return 0
	fi
	relocate "$stage" "$stage" "$dest"
	if [[ -e $dest || -L $dest ]]; then
		say "replacing $dest: it differs from what pip installs now (or is incomplete)"
		act rm -rf "$R$RELEASES/.replaced"
		act mv -T "$dest" "$R$RELEASES/.replaced"
		act mv -T "$stage" "$dest"
		act rm -rf "$R$RELEASES/.replaced"
	else
		act mv -T "$stage" "$dest"
	fi
	say "troupe $version installed in $dest"
}

# Point `venv` at the release (and `previous` at the one it pointed at), each by renaming a
# fresh link over the old, so the link is never missing. An old install's venv directory is
# replaced by the link.
ensure_current() {
	local link=$R$VENV want=releases/$RELEASE old=""
	if [[ -L $link ]]; then
		old=$(readlink "$link")
		# install.sh links relative to /opt/troupe, troupe.update by the absolute path.
		if [[ $old == "$want" || $old == "$RELEASES/$RELEASE" || $old == "$R$RELEASES/$RELEASE" ]]; then
			return 0
		fi
	elif [[ -d $link ]]; then
		say "migrating: $VENV is a venv directory (an install.sh from before releases); it becomes a link to $RELEASES/$RELEASE"
		if [[ -e $R$OPT/.venv.old ]]; then
			act rm -rf "$R$OPT/.venv.old"
		fi
		act mv -T "$link" "$R$OPT/.venv.old"
		act ln -s "$want" "$link"
		act rm -rf "$R$OPT/.venv.old"
		return 0
	elif [[ -e $link ]]; then
		die "$link is neither a link nor a venv directory; move it away and run install.sh again"
	fi
	act ln -sfn "$want" "$R$OPT/.venv.new"
	act mv -T "$R$OPT/.venv.new" "$link"
	old=${old%/}
	old=${old##*/}
	if [[ -n $old && $old != "$RELEASE" && -d $R$RELEASES/$old ]]; then
		act ln -sfn "releases/$old" "$R$OPT/.previous.new"
		act mv -T "$R$OPT/.previous.new" "$R$PREVIOUS"
	fi
}

wrapper_text() {
	cat <<WRAPPER
#!/bin/sh
# troupe's command, $WRAPPER_MARK: it runs the release that $VENV
# points at, so it keeps working when an update switches releases. -P: never troupe from
# the working directory (a checkout, say) instead of the release.
exec $VENV/bin/python -P -m troupe "\$@"
WRAPPER
}

is_wrapper() { [[ -f $1 && ! -L $1 ]] && grep -qF -- "$WRAPPER_MARK" "$1"; }

# /usr/local/bin/troupe: a wrapper script (an older install.sh made it a link to the venv's
# console script, whose first line would name one release's path).
ensure_wrapper() {
	local path=$R$LINK
	if [[ -L $path ]]; then
		if [[ $(readlink "$path") != "$VENV/bin/troupe" ]]; then
			say "note: $path is not troupe's; left alone (use $VENV/bin/python -m troupe)"
			return 0
		fi
		act rm -f "$path"
	elif [[ -e $path ]] && ! is_wrapper "$path"; then
		say "note: $path is not troupe's; left alone (use $VENV/bin/python -m troupe)"
		return 0
	fi
	[[ -d $R/usr/local/bin ]] || act mkdir -p "$R/usr/local/bin"
	put_text "$LINK" 0755 root:root < <(wrapper_text)
}

starter_federation() {
	cat <<EOF
# The federation file: the same file on every Pi of the federation
# (docs/federation-file.md). install.sh wrote this starter for $BOT alone:
# replace it with your federation's file (install.sh --federation FILE).
federation: home
slack:
  mode: app-per-bot
  channel: "#home"
bots:
  $BOT:
    bot_token: file:$ETC/$BOT.bot.token
    app_token: file:$ETC/$BOT.app.token
journal: $STATE/{bot}.sqlite3
access:
  admins: []
  users: ["*"]
EOF
}

ensure_federation() {
	local file=$ETC/federation.yaml
	if [[ -n $FEDERATION ]]; then
		[[ -f $FEDERATION ]] || die "no federation file at $FEDERATION"
		put_file "$FEDERATION" "$file" 0644 root:root
	elif [[ ! -f $R$file ]]; then
		put_text "$file" 0644 root:root < <(starter_federation)
	else
		ensure_perms "$file" 0644 root:root
	fi
	put_text "$ETC/troupe.env" 0644 root:root < <(printf 'TROUPE_BOT=%s\n' "$BOT")
}

# This bot's token of KIND (bot or app) into /etc/troupe/BOT.KIND.token, mode 0600: from
# a file or the terminal, never from the command line or the environment (both end up in
# shell history and in `ps`).
ensure_token() {
	local kind=$1 file=$2 prefix=$3 dest=$ETC/$BOT.$1.token token=""
	if [[ -n $file ]]; then
		[[ -r $file ]] || die "cannot read the $kind token file $file"
		token=$(tr -d '[:space:]' <"$file")
	elif [[ ! -f $R$dest && -t 0 ]] && ((!DRY_RUN)); then
		read -r -s -p "$BOT's $kind token ($prefix...; Enter to skip): " token
		printf '\n'
		token=$(printf '%s' "$token" | tr -d '[:space:]')
	fi
	if [[ -n $token ]]; then
		[[ $token == "$prefix"* ]] || die "the $kind token must start with $prefix"
		put_text "$dest" 0600 "$USER_NAME:$USER_NAME" < <(printf '%s\n' "$token")
	elif [[ -f $R$dest ]]; then
		ensure_perms "$dest" 0600 "$USER_NAME:$USER_NAME"
	else
		MISSING+=("$dest")
	fi
}

ensure_units() {
	local before=$CHANGES
	ensure_dir /etc/systemd/system 0755 root:root
	put_file "$SCRIPT_DIR/troupe.service" "$UNIT" 0644 root:root
	put_file "$SCRIPT_DIR/troupe-update@.service" "$UPDATE_UNIT" 0644 root:root
	if ((CHANGES != before)) && systemd_running; then
		quiet_act systemctl daemon-reload
	fi
}

# The polkit rule that lets the troupe user start troupe-update@VERSION.service and restart
# troupe.service (polkit reads rules.d again by itself when a file changes).
ensure_rule() {
	if [[ ! -d $R$POLKIT_RULES ]]; then
		# polkit's package owns the directory when it is there: its mode is left alone.
		ensure_dir "$POLKIT_RULES" 0755 root:root
	fi
	put_file "$SCRIPT_DIR/50-troupe.rules" "$RULE" 0644 root:root
	if [[ -z $R ]] && ! polkit_installed; then
		say "note: polkit is not installed, so \`update\` and \`restart\` from chat cannot work yet;"
		say "  install it (sudo apt-get install polkitd on Bookworm) and the rule above applies"
	fi
}

ensure_service() {
	if [[ -n $R ]]; then
		say "skip (--root): troupe check, systemctl enable and start troupe"
		return 0
	fi
	if ((${#MISSING[@]})); then
		say "NOT STARTED: no token yet in ${MISSING[*]}"
		say "  run install.sh again on a terminal (it asks for each token), or hand each"
		say "  over in a file with --bot-token-file F / --app-token-file F"
		return 0
	fi
	if ((!DRY_RUN)); then
		runuser -u "$USER_NAME" -- "$VENV/bin/python" -c pass ||
			die "the $USER_NAME user cannot run $VENV/bin/python ($(readlink -f "$VENV/bin/python")); reinstall with --python /usr/bin/python3"
		say "+ troupe check --config $ETC/federation.yaml --bot $BOT (as $USER_NAME)"
		runuser -u "$USER_NAME" -- "$VENV/bin/python" -P -m troupe check \
			--config "$ETC/federation.yaml" --bot "$BOT" ||
			die "the federation file or a token has problems (above); fix them and run install.sh again"
	else
		say "would run: troupe check --config $ETC/federation.yaml --bot $BOT (as $USER_NAME)"
	fi
	if ! systemd_running; then
		say "note: systemd is not running here; start the bot with:"
		say "  runuser -u $USER_NAME -- $VENV/bin/python -P -m troupe run --config $ETC/federation.yaml"
		return 0
	fi
	if ! systemctl is-enabled --quiet troupe 2>/dev/null; then
		quiet_act systemctl enable troupe
	fi
	if ((!START)); then
		say "not started (--no-start): sudo systemctl start troupe"
	elif ((CHANGES)) || ! systemctl is-active --quiet troupe; then
		quiet_act systemctl restart troupe
		say "started; see how it does with: systemctl status troupe; journalctl -u troupe -f"
	fi
}

install_bot() {
	check_python
	pick_source
	if [[ -z $BOT ]]; then
		BOT=$(hostname 2>/dev/null || uname -n)
		BOT=${BOT%%.*}
	fi
	BOT=${BOT,,}
	[[ $BOT =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] ||
		die "'$BOT' is not a bot name; use letters, digits and '-' (pass --bot NAME)"
	if [[ -z $SITE_PACKAGES ]] && on_a_pi; then
		SITE_PACKAGES=1
	fi
	local name
	for name in troupe.service troupe-update@.service 50-troupe.rules; do
		[[ -f $SCRIPT_DIR/$name ]] ||
			die "$name is not next to install.sh in $SCRIPT_DIR; copy the whole deploy/ directory"
	done
	say "installing troupe for bot $BOT from $SOURCE${R:+ into $R}"
	install_packages
	ensure_user
	ensure_dir "$OPT" 0755 root:root
	ensure_dir "$ETC" 0750 "root:$USER_NAME"
	ensure_dir "$STATE" 0750 "$USER_NAME:$USER_NAME"
	# The federation file and the tokens first: a wrong token stops before pip's long work.
	ensure_federation
	ensure_token bot "$BOT_TOKEN_FILE" xoxb-
	ensure_token app "$APP_TOKEN_FILE" xapp-
	ensure_release
	ensure_current
	ensure_wrapper
	ensure_units
	ensure_rule
	ensure_service
}

# --- removing --------------------------------------------------------------------------

remove() {
	local path=$R$1
	if [[ -e $path || -L $path ]]; then
		act rm -rf "$path"
	fi
}

uninstall_bot() {
	say "removing troupe${R:+ from $R}"
	if systemd_running && [[ -f $UNIT ]]; then
		quiet_act systemctl disable --now troupe
	fi
	remove "$UNIT"
	remove "$UPDATE_UNIT"
	remove "$RULE"
	if systemd_running; then
		quiet_act systemctl daemon-reload
		quiet_act systemctl reset-failed troupe 2>/dev/null || true
	fi
	if [[ -L $R$LINK && $(readlink "$R$LINK") == "$VENV/bin/troupe" ]] || is_wrapper "$R$LINK"; then
		remove "$LINK"
	fi
	remove "$OPT"
	if ((PURGE)); then
		remove "$ETC"
		remove "$STATE"
		if [[ -n $R ]]; then
			say "skip (--root): userdel $USER_NAME"
		elif getent passwd "$USER_NAME" >/dev/null; then
			act userdel "$USER_NAME"
		fi
	else
		remove "$ETC/troupe.env"
		say "kept $ETC (federation file, tokens), $STATE (journal) and the user $USER_NAME;"
		say "  install.sh --uninstall --purge removes them too"
	fi
}

main() {
	parse_args "$@"
	if ((UNINSTALL)); then
		uninstall_bot
	else
		install_bot
	fi
	if ((DRY_RUN)); then
		say "dry run: $CHANGES change(s) would be made"
	elif ((CHANGES)); then
		say "troupe: done, $CHANGES change(s)"
	else
		say "troupe: nothing to change"
	fi
}

main "$@"
