#!/usr/bin/env bash
# Installs what the OIDC browser tests need, idempotently and non-interactively:
#   - Debian's chromium (+ fonts for readable screenshots), only when missing;
#   - the JS harness in proxy/tests/oidc (oidc-provider, playwright-core) from its lockfile.
# Safe to call on every CI run: with everything in place it touches no network and takes ~0 s.
# playwright-core never downloads a browser; the tests use /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
HARNESS=proxy/tests/oidc
APT_PACKAGES=(chromium fonts-liberation fonts-dejavu-core)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ] || [ ! -x /usr/bin/chromium ]; then
  echo "install-test-deps: apt-get install ${missing[*]:-chromium}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq -o Dpkg::Use-Pty=0 "${APT_PACKAGES[@]}" >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | head -n1

# Node.js 20+ is required (oidc-provider v9 is ESM and uses recent node:crypto APIs).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "install-test-deps: Node.js >= 20 required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# node_modules is reused while it was installed from this exact lockfile by this Node version.
stamp="$HARNESS/node_modules/.vouchrs-lock-stamp"
want="$(sha256sum "$HARNESS/package-lock.json" | cut -d' ' -f1) node-$(node --version)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -d "$HARNESS/node_modules/oidc-provider" ] && [ -d "$HARNESS/node_modules/playwright-core" ]; then
  echo "install-test-deps: $HARNESS/node_modules up to date"
else
  export npm_config_cache="${npm_config_cache:-$HOME/.cache/vouchrs/npm}"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm ci --prefix "$HARNESS" --prefer-offline --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
  echo "install-test-deps: npm ci done ($HARNESS)"
fi
