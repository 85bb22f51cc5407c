#!/bin/bash
# Re-record the agent sessions in this folder with capture.py (see README.md).
#
#   AGENTS_BIN=/path/to/node_modules/.bin tests/agents/record.sh            # all of them
#   AGENTS_BIN=... tests/agents/record.sh claude-code-sonnet opencode-openai   # some
#
# AGENTS_BIN: where `claude`, `gemini`, `opencode` and `codex` are (npm install
#   @anthropic-ai/claude-code @google/gemini-cli opencode-ai @openai/codex, outside the repo).
# SCRATCH: throw-away HOME dirs and the project the agents work in (default /tmp/ccproxy-agents).
# PYTHON: an interpreter with starlette and uvicorn (default: the repo's .venv).
# No real key is used: every agent gets a fake one and talks only to capture.py on 127.0.0.1.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SCRATCH=${SCRATCH:-/tmp/ccproxy-agents}
AGENTS_BIN=${AGENTS_BIN:?set AGENTS_BIN to the node_modules/.bin holding claude, gemini, opencode and codex}
export PATH=$AGENTS_BIN:$PATH
OUT=${OUT:-$HERE}
CAPTURE="$PYTHON $HERE/capture.py"
PROMPT_BASH='Run `echo hello` with your Bash tool, then say done'
PROMPT_SHELL='Run `echo hello` with your shell tool, then say done'
PROMPT_OC='Run `echo hello` with your bash tool, then say done'

CC_VERSION=$(claude --version 2>/dev/null | awk '{print $1}')
GEMINI_VERSION=$(HOME=$SCRATCH gemini --version 2>/dev/null | tail -1)
OC_VERSION=$(HOME=$SCRATCH opencode --version 2>/dev/null | tail -1)
CODEX_VERSION=$(CODEX_HOME=$SCRATCH codex --version 2>/dev/null | awk '{print $NF}')

setup_project() {
  mkdir -p "$SCRATCH/proj"
  echo "hi" > "$SCRATCH/proj/README.md"
  # a one-page PDF saying "hello", for the attachment recordings
  python3 - "$SCRATCH/proj/hello.pdf" <<'PY'
import sys
objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        None, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
stream = b"BT /F1 24 Tf 20 40 Td (hello) Tj ET"
objs[3] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
out, offs = b"%PDF-1.4\n", []
for i, o in enumerate(objs):
    offs.append(len(out)); out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
x = len(out)
out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offs)
out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x)
open(sys.argv[1], "wb").write(out)
PY
}

# claude -p: NAME VARIANT MODEL [capture args...]; CC_PROMPT / CC_TOOLS override prompt and --allowedTools
claude_print() {
  local name=$1 variant=$2 model=$3; shift 3
  local H=$SCRATCH/home-claude
  rm -rf "$H"; mkdir -p "$H"
  (cd "$SCRATCH/proj" && HOME=$H timeout 240 $CAPTURE --out "$OUT/$name.json" --agent claude-code \
    --variant "$variant" --version "$CC_VERSION" --timeout 180 \
    --env ANTHROPIC_BASE_URL=http://127.0.0.1:{port} --env ANTHROPIC_MODEL="$model" --env HOME="$H" \
    --env DISABLE_TELEMETRY=1 "$@" --secret-env ANTHROPIC_API_KEY=sk-fake \
    -- claude -p "${CC_PROMPT:-$PROMPT_BASH}" --allowedTools "${CC_TOOLS:-Bash}")
}

# interactive claude in a pty, prompt, then /context (count_tokens burst), then /exit
claude_interactive() {
  local name=$1 variant=$2 model=$3; shift 3
  local H=$SCRATCH/home-claude-tty
  rm -rf "$H"; mkdir -p "$H"
  cat > "$H/.claude.json" <<EOF
{"hasCompletedOnboarding": true, "theme": "dark", "numStartups": 5,
 "customApiKeyResponses": {"approved": ["sk-fake"], "rejected": []},
 "projects": {"$SCRATCH/proj": {"hasTrustDialogAccepted": true, "allowedTools": ["Bash"], "hasCompletedProjectOnboarding": true}}}
EOF
  (cd "$SCRATCH/proj" && HOME=$H DRIVE_LOG=$SCRATCH/$name.tty.log DRIVE_PROMPT="$PROMPT_BASH" DRIVE_AFTER='/context' \
    timeout 240 $CAPTURE --out "$OUT/$name.json" --agent claude-code --variant "$variant" --version "$CC_VERSION" \
    --timeout 180 --env ANTHROPIC_BASE_URL=http://127.0.0.1:{port} --env ANTHROPIC_MODEL="$model" --env HOME="$H" \
    --env DISABLE_TELEMETRY=1 --env CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 "$@" \
    --secret-env ANTHROPIC_API_KEY=sk-fake \
    -- python3 "$HERE/drive_pty.py" -- claude --allowedTools Bash)
}

gemini_run() {
  local name=$1 variant=$2; shift 2
  local H=$SCRATCH/home-gemini
  rm -rf "$H"; mkdir -p "$H/.gemini"
  cat > "$H/.gemini/settings.json" <<'EOF'
{"privacy": {"usageStatisticsEnabled": false},
 "telemetry": {"enabled": false},
 "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
 "security": {"auth": {"selectedType": "gemini-api-key"}}}
EOF
  (cd "$SCRATCH/proj" && HOME=$H timeout 240 $CAPTURE --out "$OUT/$name.json" --agent gemini-cli \
    --variant "$variant" --version "$GEMINI_VERSION" --timeout 180 \
    --env GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:{port} --env GEMINI_TELEMETRY_ENABLED=false \
    --env GEMINI_CLI_TRUST_WORKSPACE=true --env HOME="$H" "$@" --secret-env GEMINI_API_KEY=fake \
    -- gemini -p "$PROMPT_SHELL" --yolo)
}

# opencode run: NAME VARIANT MODEL [capture args...]; OC_EXTRA before the message, OC_AFTER after it
opencode_run() {
  local name=$1 variant=$2 model=$3; shift 3
  local H=$SCRATCH/home-opencode
  rm -rf "$H"; mkdir -p "$H"
  local CONFIG='{"$schema":"https://opencode.ai/config.json","autoupdate":false,"share":"disabled",
"permission":{"bash":"allow","edit":"allow","read":"allow"},
"provider":{
 "capture":{"npm":"@ai-sdk/openai-compatible","name":"Capture",
   "options":{"baseURL":"http://127.0.0.1:{port}/v1","apiKey":"{env:CAPTURE_API_KEY}"},
   "models":{"capture-model":{"name":"Capture Model","tool_call":true,"reasoning":false,"attachment":true,
     "modalities":{"input":["text","image","pdf"],"output":["text"]}}}},
 "anthropic":{"options":{"baseURL":"http://127.0.0.1:{port}/v1","apiKey":"{env:CAPTURE_API_KEY}"}},
 "google":{"options":{"baseURL":"http://127.0.0.1:{port}/v1beta","apiKey":"{env:CAPTURE_API_KEY}"}}}}'
  CONFIG=$(echo "$CONFIG" | tr -d '\n')
  # shellcheck disable=SC2086
  (cd "$SCRATCH/proj" && HOME=$H timeout 240 $CAPTURE --out "$OUT/$name.json" --agent opencode \
    --variant "$variant" --version "$OC_VERSION" --timeout 180 \
    --env HOME="$H" --env XDG_CONFIG_HOME="$H/.config" --env XDG_DATA_HOME="$H/.local/share" \
    --env XDG_CACHE_HOME="$H/.cache" --env XDG_STATE_HOME="$H/.local/state" \
    --env OPENCODE_CONFIG_CONTENT="$CONFIG" \
    --env OPENCODE_DISABLE_AUTOUPDATE=1 --env OPENCODE_DISABLE_SHARE=1 --env OPENCODE_DISABLE_MODELS_FETCH=1 \
    --env OPENCODE_DISABLE_LSP_DOWNLOAD=1 --env OPENCODE_DISABLE_CLAUDE_CODE=1 \
    --secret-env CAPTURE_API_KEY=sk-fake "$@" \
    -- opencode run --model "$model" ${OC_EXTRA:-} "$PROMPT_OC" ${OC_AFTER:-})
}

# codex exec: NAME VARIANT [capture args...] [-- extra codex args]; the provider comes in -c flags
# (the port is only known to capture.py), CODEX_HOME is a throw-away dir, no login.
codex_run() {
  local name=$1 variant=$2; shift 2
  local cap=() H=$SCRATCH/home-codex
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cap+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  rm -rf "$H"; mkdir -p "$H/.codex"
  (cd "$SCRATCH/proj" && HOME=$H timeout 240 $CAPTURE --out "$OUT/$name.json" --agent codex \
    --variant "$variant" --version "$CODEX_VERSION" --timeout 180 \
    --env HOME="$H" --env CODEX_HOME="$H/.codex" "${cap[@]}" --secret-env CAPTURE_API_KEY=sk-fake \
    -- codex exec --skip-git-repo-check -c model_provider=capture \
    -c 'model_providers.capture={name="capture", base_url="http://127.0.0.1:{port}/v1", env_key="CAPTURE_API_KEY", wire_api="responses"}' \
    "$@" "$PROMPT_SHELL")
}

record() {
  local Q="--env CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"
  case $1 in
    claude-code-sonnet) claude_print "$1" claude-sonnet-4-5 claude-sonnet-4-5 $Q ;;
    claude-code-sonnet-thinking4000) claude_print "$1" claude-sonnet-4-5-MAX_THINKING_TOKENS-4000 claude-sonnet-4-5 $Q --env MAX_THINKING_TOKENS=4000 ;;
    claude-code-sonnet-nothinking) claude_print "$1" claude-sonnet-4-5-MAX_THINKING_TOKENS-0 claude-sonnet-4-5 $Q --env MAX_THINKING_TOKENS=0 ;;
    claude-code-sonnet-nonessential) claude_print "$1" claude-sonnet-4-5-with-nonessential-traffic claude-sonnet-4-5 ;;
    claude-code-sonnet-websearch) CC_PROMPT='Search the web for "ccproxy" with your WebSearch tool, then say done' CC_TOOLS=WebSearch \
        claude_print "$1" claude-sonnet-4-5-websearch claude-sonnet-4-5 $Q --tool WebSearch --tool-args '{"query": "ccproxy"}' ;;
    claude-code-sonnet-interactive) claude_interactive "$1" claude-sonnet-4-5-interactive-context claude-sonnet-4-5 ;;
    claude-code-gemini) claude_print "$1" gemini-2.5-flash gemini-2.5-flash $Q ;;
    claude-code-gemini-interactive) claude_interactive "$1" gemini-2.5-flash-interactive-context gemini-2.5-flash ;;
    gemini-cli-default) gemini_run "$1" default-model ;;
    gemini-cli-2.5-flash) gemini_run "$1" gemini-2.5-flash --env GEMINI_MODEL=gemini-2.5-flash ;;
    opencode-openai) opencode_run "$1" openai-compatible capture/capture-model ;;
    opencode-openai-pdf) OC_AFTER="-f $SCRATCH/proj/hello.pdf" opencode_run "$1" openai-compatible-pdf-attached capture/capture-model ;;
    opencode-anthropic) opencode_run "$1" anthropic-claude-sonnet-4-5 anthropic/claude-sonnet-4-5 ;;
    opencode-anthropic-thinking) OC_EXTRA="--variant high" opencode_run "$1" anthropic-claude-sonnet-4-5-variant-high anthropic/claude-sonnet-4-5 ;;
    opencode-anthropic-pdf) OC_AFTER="-f $SCRATCH/proj/hello.pdf" opencode_run "$1" anthropic-claude-sonnet-4-5-pdf-attached anthropic/claude-sonnet-4-5 ;;
    opencode-google) opencode_run "$1" google-gemini-2.5-flash google/gemini-2.5-flash ;;
    codex-default) codex_run "$1" default-model ;;
    codex-high) codex_run "$1" default-model-reasoning-high -- -c model_reasoning_effort=high ;;
    codex-gpt-5.5) codex_run "$1" gpt-5.5 -- -m gpt-5.5 ;;
    codex-unknown-model) codex_run "$1" unknown-model-gpt-5.1-codex -- -m gpt-5.1-codex ;;
    *) echo "unknown recording: $1" >&2; return 2 ;;
  esac
}

ALL="claude-code-sonnet claude-code-sonnet-thinking4000 claude-code-sonnet-nothinking claude-code-sonnet-nonessential
claude-code-sonnet-websearch claude-code-sonnet-interactive claude-code-gemini claude-code-gemini-interactive
gemini-cli-default gemini-cli-2.5-flash opencode-openai opencode-openai-pdf opencode-anthropic
opencode-anthropic-thinking opencode-anthropic-pdf opencode-google codex-default codex-high codex-gpt-5.5
codex-unknown-model"

mkdir -p "$SCRATCH"
setup_project
status=0
for name in ${*:-$ALL}; do
  echo "== $name" >&2
  record "$name" || status=1
done
exit $status
