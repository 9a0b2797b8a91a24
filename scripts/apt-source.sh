#!/usr/bin/env bash
# Prints the Debian archive this machine's apt is configured to use, as "URI KEYRING": the
# first enabled `deb` source for this release's suite with the `main` component, from
# sources.list and sources.list.d (one-line *.list and deb822 *.sources files). Download
# steps take their mirror (or proxy, or snapshot) from here, never from a location of ours.
#   APT_SOURCES_LIST, APT_SOURCES_PARTS, APT_CODENAME override the inputs (for tests).
# Exits 1 with a clear message when no source qualifies.
set -euo pipefail
list=${APT_SOURCES_LIST:-/etc/apt/sources.list}
parts=${APT_SOURCES_PARTS:-/etc/apt/sources.list.d}
codename=${APT_CODENAME:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
default_keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -z "$codename" ]; then
  echo "apt-source: this machine's release has no codename in /etc/os-release" >&2
  exit 1
fi

files=()
[ -f "$list" ] && files+=("$list")
if [ -d "$parts" ]; then
  for f in "$parts"/*.list "$parts"/*.sources; do [ -f "$f" ] && files+=("$f"); done
fi

found=""
for f in "${files[@]}"; do
  case "$f" in
    *.sources)
      # deb822: paragraphs of "Key: value"; continuation lines start with a blank.
      found=$(awk -v want="$codename" -v keyring="$default_keyring" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && enabled != "no" &&
              (" " suites " ") ~ (" " want " ") && (" " comps " ") ~ / main /) {
            split(uris, u, " "); print u[1], (signed != "" ? signed : keyring); done = 1; exit
          }
          types = uris = suites = comps = signed = enabled = ""
        }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[A-Za-z-]+:/ {
          key = tolower(substr($0, 1, index($0, ":") - 1))
          val = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "types") types = val
          else if (key == "uris") uris = val
          else if (key == "suites") suites = val
          else if (key == "components") comps = val
          else if (key == "signed-by") signed = val
          else if (key == "enabled") enabled = tolower(val)
        }
        END { if (!done && types != "") flush() }
      ' "$f") ;;
    *)
      # One line per source: deb [options] URI suite component...
      found=$(awk -v want="$codename" -v keyring="$default_keyring" '
        /^[ \t]*deb[ \t]/ {
          line = $0; signed = ""
          if (match(line, /\[[^]]*\]/)) {
            opts = substr(line, RSTART + 1, RLENGTH - 2)
            line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
            n = split(opts, o, /[ \t]+/)
            for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) signed = substr(o[i], 11)
          }
          n = split(line, w, /[ \t]+/)
          if (w[3] != want) next
          for (i = 4; i <= n; i++) if (w[i] == "main") {
            print w[2], (signed != "" ? signed : keyring); exit
          }
        }
      ' "$f") ;;
  esac
  [ -n "$found" ] && break
done

if [ -z "$found" ]; then
  echo "apt-source: no enabled 'deb' source for Debian $codename with component main in" \
    "${files[*]:-$list $parts}; configure one (a mirror or proxy is fine) and retry" >&2
  exit 1
fi
echo "$found"
