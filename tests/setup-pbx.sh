#!/usr/bin/env bash
# Builds the real PBXs the tests run against — Asterisk (chan_pjsip, no
# codec_opus: the stock Asterisk most users run) and FreeSWITCH (mod_sofia,
# mod_opus) — from the sources in ../shared/pbx/, into a fixed prefix, with
# no downloads. Idempotent: each PBX carries a stamp of what it was built
# from (tarball and module set); a matching stamp means nothing is done, so
# only a machine's first run pays the build (about 5 min for Asterisk and
# 3.5 min for FreeSWITCH on 2 cores, more with other work beside it).
#
# Without the sources (a clone without ../shared) the PBX tests are skipped
# and say so; under CI=true a missing PBX is a failure.
#
#   WSB_PBX_SOURCES  where the tarballs are (default: ../shared/pbx beside the repo)
#   WSB_PBX_PREFIX   where the PBXs go (default: /opt/wsb-pbx)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
src="${WSB_PBX_SOURCES:-$repo/../shared/pbx}"
prefix="${WSB_PBX_PREFIX:-/opt/wsb-pbx}"

asterisk_tar="asterisk-master-f0c1c1a7b7.tar.xz"
pjproject_tar="pjproject-2.17.tar.bz2"
freeswitch_tar="freeswitch-1.10.12.tar.xz"
sofia_tar="sofia-sip-1.13.17.tar.xz"
spandsp_tar="spandsp-0c7bcebef4.tar.xz"

for t in "$asterisk_tar" "$pjproject_tar" "$freeswitch_tar" "$sofia_tar" "$spandsp_tar"; do
    if [ ! -f "$src/$t" ]; then
        msg="setup-pbx: $src/$t not found: the real-PBX tests will be skipped (put the PBX sources there or set WSB_PBX_SOURCES; see ../shared/pbx/README.md)"
        if [ "${CI:-}" = "true" ]; then
            echo "$msg — and CI=true requires them" >&2
            exit 1
        fi
        echo "$msg"
        exit 0
    fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Build dependencies (Debian 12), installed only when missing.
packages=(build-essential pkg-config autoconf automake libtool libtool-bin bzip2 xz-utils
    libjansson-dev libxml2-dev libsqlite3-dev uuid-dev libedit-dev libssl-dev libsrtp2-dev
    libcurl4-openssl-dev libncurses-dev libopus-dev zlib1g-dev libtiff-dev libjpeg-dev
    libpcre3-dev libspeex-dev libspeexdsp-dev libldns-dev libsndfile1-dev)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-pbx: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc 2>/dev/null || echo 2)
$sudo mkdir -p "$prefix"
$sudo chown "$(id -u):$(id -g)" "$prefix"

# ---------------------------------------------------------------- Asterisk
# The modules the tests and the shipped profile use (../shared/pbx/README.md).
asterisk_modules="chan_pjsip res_pjproject res_rtp_asterisk res_srtp res_format_attr_opus
codec_ulaw codec_alaw format_wav format_pcm format_sln app_dial app_playback app_echo app_read
app_senddtmf app_transfer app_blind_transfer app_verbose app_playtones app_queue app_milliwatt
app_record app_stack app_exec app_mixmonitor app_originate app_channelredirect pbx_config
bridge_simple bridge_native_rtp bridge_softmix bridge_holding func_channel func_callerid
func_strings func_logic func_cdr func_global func_timeout func_pjsip_endpoint
res_pjsip res_pjsip_session res_pjsip_sdp_rtp res_pjsip_endpoint_identifier_ip
res_pjsip_endpoint_identifier_user res_pjsip_endpoint_identifier_anonymous
res_pjsip_authenticator_digest res_pjsip_outbound_authenticator_digest res_pjsip_registrar
res_pjsip_outbound_registration res_pjsip_refer res_pjsip_nat res_pjsip_dtmf_info
res_pjsip_rfc3326 res_pjsip_caller_id res_pjsip_header_funcs res_pjsip_logger
res_pjsip_dlg_options res_pjsip_transport_management res_pjsip_config_wizard res_pjsip_acl
func_pjsip_contact func_pjsip_aor func_math func_hangupcause res_timing_timerfd
res_sorcery_config res_sorcery_memory res_sorcery_astdb res_sorcery_realtime
res_sorcery_memory_cache res_musiconhold res_clioriginate"
# The stamp names the recipe's revision too: a changed recipe rebuilds.
asterisk_stamp="recipe-3 $asterisk_tar $pjproject_tar $(echo "$asterisk_modules" | tr -s ' \n' ' ' | md5sum | cut -c1-12)"
if [ "$(cat "$prefix/asterisk/.wsb-stamp" 2>/dev/null)" != "$asterisk_stamp" ]; then
    echo "setup-pbx: building Asterisk into $prefix/asterisk (about 5 minutes, once)"
    started=$(date +%s)
    work=$(mktemp -d)
    tar -C "$work" -xJf "$src/$asterisk_tar"
    cache="$work/cache"
    mkdir -p "$cache"
    cp "$src/$pjproject_tar" "$cache/"
    (
        cd "$work/asterisk"
        # A git snapshot has no .version: name it after the tarball.
        [ -f .version ] || echo "master-f0c1c1a7b7" >.version
        ./configure --prefix="$prefix/asterisk" --with-pjproject-bundled \
            --with-externals-cache="$cache" --without-jansson-bundled >"$work/configure.log" 2>&1 ||
            { tail -30 "$work/configure.log"; exit 1; }
        make menuselect.makeopts >/dev/null
        # res_pjsip and its parts: every one that builds. (--list-options
        # rewrites menuselect.makeopts with the defaults: ask it first.)
        pjsip_modules=$(menuselect/menuselect --list-options 2>/dev/null |
            awk '{print $2}' | grep -E '^res_pjsip' || true)
        for cat in APPS BRIDGES CDR CEL CHANNELS CODECS FORMATS FUNCS PBX RES TESTS UTILS AGIS \
            CORE_SOUNDS MOH EXTRA_SOUNDS; do
            menuselect/menuselect --disable-category "MENUSELECT_$cat" menuselect.makeopts >/dev/null
        done
        for m in $asterisk_modules $pjsip_modules; do
            menuselect/menuselect --enable "$m" menuselect.makeopts >/dev/null 2>&1 || true
        done
        if ! grep -q 'app_voicemail ' menuselect.makeopts ||
            grep -qE '(=| )res_pjsip_endpoint_identifier_ip( |$)' menuselect.makeopts; then
            echo "setup-pbx: the Asterisk module selection did not hold" >&2
            exit 1
        fi
        make -j"$jobs" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
        rm -rf "$prefix/asterisk"
        make install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; exit 1; }
    )
    rm -rf "$work"
    echo "$asterisk_stamp" >"$prefix/asterisk/.wsb-stamp"
    echo "setup-pbx: Asterisk built in $(( $(date +%s) - started )) s"
fi

# -------------------------------------------------------------- FreeSWITCH
freeswitch_modules="applications/mod_commands
applications/mod_db
applications/mod_dptools
applications/mod_hash
codecs/mod_opus
dialplans/mod_dialplan_xml
endpoints/mod_loopback
endpoints/mod_sofia
event_handlers/mod_event_socket
formats/mod_local_stream
formats/mod_native_file
formats/mod_sndfile
formats/mod_tone_stream
loggers/mod_console
loggers/mod_logfile"
freeswitch_stamp="$freeswitch_tar $sofia_tar $spandsp_tar $(echo "$freeswitch_modules" | md5sum | cut -c1-12)"
if [ "$(cat "$prefix/freeswitch/.wsb-stamp" 2>/dev/null)" != "$freeswitch_stamp" ]; then
    echo "setup-pbx: building FreeSWITCH into $prefix/freeswitch (about 3.5 minutes, once)"
    started=$(date +%s)
    work=$(mktemp -d)
    deps="$prefix/freeswitch-deps"
    rm -rf "$deps" "$prefix/freeswitch"
    for t in "$sofia_tar" "$spandsp_tar" "$freeswitch_tar"; do tar -C "$work" -xJf "$src/$t"; done
    (
        cd "$work/sofia-sip"
        ./bootstrap.sh >"$work/sofia.log" 2>&1 &&
            ./configure --prefix="$deps" --disable-stun --without-doxygen >>"$work/sofia.log" 2>&1 &&
            make -j"$jobs" >>"$work/sofia.log" 2>&1 && make install >>"$work/sofia.log" 2>&1 ||
            { tail -30 "$work/sofia.log"; exit 1; }
        cd "$work/spandsp"
        ./bootstrap.sh >"$work/spandsp.log" 2>&1 &&
            ./configure --prefix="$deps" >>"$work/spandsp.log" 2>&1 &&
            make -j"$jobs" >>"$work/spandsp.log" 2>&1 && make install >>"$work/spandsp.log" 2>&1 ||
            { tail -30 "$work/spandsp.log"; exit 1; }
        cd "$work/freeswitch"
        echo "$freeswitch_modules" >modules.conf
        export PKG_CONFIG_PATH="$deps/lib/pkgconfig"
        export LDFLAGS="-Wl,-rpath,$deps/lib"
        ./bootstrap.sh -j >"$work/fs.log" 2>&1 &&
            ./configure --prefix="$prefix/freeswitch" --disable-libvpx --disable-libyuv \
                --without-png --without-freetype --disable-core-odbc-support --disable-debug \
                >>"$work/fs.log" 2>&1 &&
            make -j"$jobs" >>"$work/fs.log" 2>&1 && make install >>"$work/fs.log" 2>&1 ||
            { tail -40 "$work/fs.log"; exit 1; }
        # The vanilla configuration the tests start from.
        rm -rf "$prefix/freeswitch/vanilla-conf"
        cp -r conf/vanilla "$prefix/freeswitch/vanilla-conf"
    )
    rm -rf "$work"
    echo "$freeswitch_stamp" >"$prefix/freeswitch/.wsb-stamp"
    echo "setup-pbx: FreeSWITCH built in $(( $(date +%s) - started )) s"
fi

echo "setup-pbx: $("$prefix/asterisk/sbin/asterisk" -V 2>/dev/null || echo 'Asterisk ?'), FreeSWITCH $("$prefix/freeswitch/bin/freeswitch" -version 2>/dev/null | tail -1 || echo '?') in $prefix"
