#!/usr/bin/env bash
# Debian packages the tests need (a real Orthanc PACS, headless Chromium, the dciodvfy DICOM validator). Installed only when missing;
# without root (a user's clone) it says what to install and the tests that need them skip.
set -u
need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc orthanc-dicomweb)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)  # DICOM IOD validator for SEG/SR tests
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a system Orthanc on the default ports; the tests start their own.
  (service orthanc stop || pkill -x Orthanc) >/dev/null 2>&1 || true
else
  echo "Not installing ${need[*]} (needs root + apt-get); PACS and browser tests will skip." >&2
fi
exit 0
