#!/usr/bin/env bash
# Start the local Kubernetes control plane built by build.sh:
#   etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler -> kwok (fake node + pods)
# then register one fake node and wait until the cluster can run pods.
#
# Everything listens on 127.0.0.1 only. State (certificates, etcd data, logs, PIDs) lives in
# $OVERSEER_CACHE/control-plane/run (default <repo>/.cache/control-plane/run); down.sh stops
# exactly the processes recorded there. The processes run in their own session, so they keep
# running after the calling shell (or `make cluster`) returns.
#
# Idempotent: when the control plane of a previous run is still up and answers /readyz, it
# says so and exits 0.
#
# Env:
#   FRESH=1                 wipe the state first (new etcd data and certificates)
#   E2E_CLUSTER=kind        use `kind` with a Docker engine instead of the processes below
#   ETCD_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT   override the loopback ports
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${OVERSEER_CACHE:-$REPO/.cache}
CP=$CACHE/control-plane
BIN=$CP/bin
RUN=$CP/run
PKI=$RUN/pki
LOGS=$RUN/logs
KUBECONFIG_PATH=$RUN/admin.kubeconfig
ETCD_PORT=${ETCD_PORT:-32379}     # etcd client port (peer port = +1)
API_PORT=${API_PORT:-32443}       # kube-apiserver secure port
KCM_PORT=${KCM_PORT:-32257}       # kube-controller-manager healthz (https)
SCHED_PORT=${SCHED_PORT:-32259}   # kube-scheduler healthz (https)
KWOK_PORT=${KWOK_PORT:-32247}     # kwok's own server
ADVERTISE_ADDRESS=192.0.2.1       # what Service default/kubernetes names (see kube-apiserver below)
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
NODE=kwok-node-0

now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }
secs() { # secs FROM_MS [TO_MS] -> "1.234"
  local d=$(( ${2:-$(now_ms)} - $1 ))
  printf '%d.%03d' $((d / 1000)) $((d % 1000))
}
T0=$(now_ms)
step_t=$T0
step() { echo "==> $*"; step_t=$(now_ms); }
done_step() { echo "    done in $(secs "$step_t") s"; }
die() { echo "up.sh: $*" >&2; exit 1; }

# ---------- kind (optional, needs a Docker engine) --------------------------------------------
case "${E2E_CLUSTER:-local}" in
  local|"") ;;
  kind)
    command -v kind >/dev/null || die "E2E_CLUSTER=kind but the kind command is not installed"
    command -v docker >/dev/null && docker info >/dev/null 2>&1 \
      || die "E2E_CLUSTER=kind needs a running Docker engine (docker info failed); unset E2E_CLUSTER to use the local control plane"
    mkdir -p "$RUN"
    echo kind > "$RUN/mode"
    if kind get clusters 2>/dev/null | grep -qx overseer; then
      kind export kubeconfig --name overseer --kubeconfig "$KUBECONFIG_PATH"
      echo "kind cluster 'overseer' already running"
    else
      step "kind create cluster --name overseer"
      kind create cluster --name overseer --kubeconfig "$KUBECONFIG_PATH" --wait 120s
      done_step
    fi
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    exit 0 ;;
  *) die "unknown E2E_CLUSTER='$E2E_CLUSTER' (use 'kind', or leave it unset for the local control plane)" ;;
esac

[ -f "$BIN/.stamp" ] || die "control plane binaries missing in $BIN: run 'make cluster-build' (or e2e/cluster/build.sh) first"
for b in $COMPONENTS kubectl; do [ -x "$BIN/$b" ] || die "missing $BIN/$b: run 'make cluster-build'"; done
[ -f "$BIN/kwok-stages.yaml" ] || die "missing $BIN/kwok-stages.yaml: run 'make cluster-build'"
for t in curl openssl setsid; do command -v "$t" >/dev/null || die "$t is required"; done

CURL=(curl -sf --noproxy '*' --max-time 2)
api_ready() {
  [ -f "$PKI/admin.crt" ] || return 1
  "${CURL[@]}" --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}
pid_of() { cat "$RUN/pids/$1.pid" 2>/dev/null || true; }
is_ours() { # is_ours NAME: the recorded PID is alive and still runs our binary
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  local cmd; cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == "$BIN/$1 "* ]]
}

# ---------- already running? ------------------------------------------------------------------
if [ "${FRESH:-0}" != 1 ] && [ -d "$RUN/pids" ]; then
  alive=0
  for c in $COMPONENTS; do is_ours "$c" && alive=$((alive + 1)); done
  if [ "$alive" = 5 ] && api_ready; then
    echo "control plane already running (API https://127.0.0.1:$API_PORT, state in $RUN)"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    exit 0
  fi
  if [ "$alive" -gt 0 ]; then
    echo "control plane partly running ($alive of 5 components): stopping it before a clean start"
    "$HERE/down.sh"
  fi
fi
[ "${FRESH:-0}" = 1 ] && { "$HERE/down.sh" >/dev/null; rm -rf "$RUN"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$ETCD_PORT" $((ETCD_PORT + 1)) "$API_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is already in use (override ETCD_PORT, API_PORT, KCM_PORT, SCHED_PORT or KWOK_PORT)"
done
mkdir -p "$PKI" "$LOGS" "$RUN/pids" "$RUN/etcd-data"
echo local > "$RUN/mode"

# ---------- 1. PKI (openssl), once; reused on restart -----------------------------------------
step "certificates"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log" >/dev/null || die "openssl $1 failed (see $LOGS/openssl.log)"; }
sign() { # sign NAME CA EXTENSIONS
  ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.crt" -CAkey "$PKI/$2.key" -CAcreateserial \
    -days 365 -out "$PKI/$1.crt" -extfile <(printf '%b' "$3")
}
CLIENT_EXT='extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n'
gen_client() { # gen_client NAME CN [O]
  local subj="/CN=$2"; [ -n "${3:-}" ] && subj="/O=$3/CN=$2"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "$subj" -out "$PKI/$1.csr"
  sign "$1" ca "$CLIENT_EXT"
}
if [ ! -f "$PKI/.complete" ]; then
  ossl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 -subj "/CN=overseer-local-ca"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -subj "/CN=kube-apiserver" -out "$PKI/apiserver.csr"
  sign apiserver ca 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n'
  gen_client admin admin system:masters
  gen_client kcm system:kube-controller-manager
  gen_client scheduler system:kube-scheduler
  # front-proxy CA + client: the aggregation layer's identity; without it the other
  # components log errors about a missing requestheader CA bundle
  ossl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 365 -subj "/CN=overseer-front-proxy-ca"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/front-proxy-client.key" -subj "/CN=front-proxy-client" -out "$PKI/front-proxy-client.csr"
  sign front-proxy-client front-proxy-ca "$CLIENT_EXT"
  ossl genrsa -out "$PKI/sa.key" 2048              # service-account token signing key pair
  ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  chmod 600 "$PKI"/*.key
  touch "$PKI/.complete"
fi
# kubeconfigs are rewritten every time so that a changed API_PORT takes effect
for n in admin kcm scheduler; do
  cat > "$RUN/$n.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: overseer-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $n
  user:
    client-certificate: $PKI/$n.crt
    client-key: $PKI/$n.key
contexts:
- name: overseer-local
  context: {cluster: overseer-local, user: $n}
current-context: overseer-local
KC
done
chmod 600 "$RUN"/*.kubeconfig
done_step
T_PKI=$(now_ms)

# ---------- process helpers -------------------------------------------------------------------
start() { # start NAME ARGS... : $BIN/NAME in its own session, detached from this shell
  local name=$1; shift
  rm -f "$RUN/pids/$name.pid"
  # setsid -f: new session, no controlling terminal, not a child of this shell; the wrapper
  # records its own PID and then execs the binary, so the PID file names the binary itself
  setsid -f bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$RUN/pids/$name.pid" "$BIN/$name" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1
  local i
  # wait for the exec too: until then the PID runs bash, and is_ours would call it dead
  for i in $(seq 1 50); do is_ours "$name" && return 0; sleep 0.1; done
  die "$name did not start (log: $LOGS/$name.log)"
}
wait_healthy() { # wait_healthy NAME TIMEOUT_S CHECK... : poll CHECK, fail early if NAME died
  local name=$1 deadline=$(( $(now_ms) + $2 * 1000 )); shift 2
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    if ! is_ours "$name"; then
      echo "---- last lines of $LOGS/$name.log" >&2; tail -20 "$LOGS/$name.log" >&2
      die "$name exited during startup"
    fi
    if [ "$(now_ms)" -gt "$deadline" ]; then
      echo "---- last lines of $LOGS/$name.log" >&2; tail -20 "$LOGS/$name.log" >&2
      die "timeout waiting for $name"
    fi
    sleep 0.1
  done
}
KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH")

# ---------- 2. etcd ---------------------------------------------------------------------------
step "etcd on 127.0.0.1:$ETCD_PORT"
start etcd --name overseer --data-dir "$RUN/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "overseer=http://127.0.0.1:$((ETCD_PORT + 1))" \
  --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
wait_healthy etcd 30 "${CURL[@]}" "http://127.0.0.1:$ETCD_PORT/health"
done_step
T_ETCD=$(now_ms)

# ---------- 3. kube-apiserver -----------------------------------------------------------------
# Default admission plugins (PodSecurity, ResourceQuota, ServiceAccount, ...) stay on.
# The lease endpoint reconciler publishes the API server in Service default/kubernetes and its
# EndpointSlice as on any cluster (the operator names that address in each Agent's
# NetworkPolicy). Endpoints may not name a loopback address, so the API server, which listens on
# 127.0.0.1 only, advertises $ADVERTISE_ADDRESS:$API_PORT: an address from TEST-NET-1 (RFC 5737)
# that routes nowhere. Nothing connects to it: every client here uses the loopback URL.
step "kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address="$ADVERTISE_ADDRESS" --secure-port="$API_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC \
  --endpoint-reconciler-type=lease \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --profiling=false
wait_healthy kube-apiserver 120 api_ready
done_step
T_API=$(now_ms)

# ---------- 4. controller-manager (all controllers) + scheduler ---------------------------------
step "kube-controller-manager, kube-scheduler, kwok"
start kube-controller-manager \
  --kubeconfig="$RUN/kcm.kubeconfig" \
  --authentication-kubeconfig="$RUN/kcm.kubeconfig" --authorization-kubeconfig="$RUN/kcm.kubeconfig" \
  --leader-elect=false --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --profiling=false
start kube-scheduler \
  --kubeconfig="$RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --profiling=false

# ---------- 5. kwok ---------------------------------------------------------------------------
# Standalone kwok has no behaviour without Stage objects: kwok's stock stages (node
# initialize/heartbeat, pod ready/complete/delete) plus ours, which finish a Running pod
# annotated overseer.dev/exit-code with that exit code.
{ cat "$BIN/kwok-stages.yaml"; echo '---'; cat "$HERE/manifests/kwok-exit-stages.yaml"; } > "$RUN/kwok-config.yaml"
start kwok --kubeconfig="$KUBECONFIG_PATH" --config="$RUN/kwok-config.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 --cidr=10.0.0.0/24 --node-ip=127.0.0.1 \
  --server-address="127.0.0.1:$KWOK_PORT"
wait_healthy kube-controller-manager 60 "${CURL[@]}" -k "https://127.0.0.1:$KCM_PORT/healthz"
wait_healthy kube-scheduler 60 "${CURL[@]}" -k "https://127.0.0.1:$SCHED_PORT/healthz"
wait_healthy kwok 60 "${CURL[@]}" "http://127.0.0.1:$KWOK_PORT/healthz"
done_step
T_ALL=$(now_ms)

# ---------- 6. a fake node, Ready; default ServiceAccount -------------------------------------
step "fake node $NODE Ready, ServiceAccount default/default"
"${KUBECTL[@]}" apply -f "$HERE/manifests/node.yaml" >/dev/null
node_ready() {
  [ "$("${KUBECTL[@]}" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_healthy kwok 60 node_ready
wait_healthy kube-controller-manager 60 "${KUBECTL[@]}" -n default get serviceaccount default
done_step
T_READY=$(now_ms)

{
  printf 'startup timings (s): certificates=%s etcd=%s kube-apiserver=%s components=%s node+serviceaccount=%s total=%s\n' \
    "$(secs "$T0" "$T_PKI")" "$(secs "$T_PKI" "$T_ETCD")" "$(secs "$T_ETCD" "$T_API")" \
    "$(secs "$T_API" "$T_ALL")" "$(secs "$T_ALL" "$T_READY")" "$(secs "$T0" "$T_READY")"
} | tee "$RUN/startup-timings.txt"
echo "control plane running: API https://127.0.0.1:$API_PORT, logs in $LOGS, stop with e2e/cluster/down.sh"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
