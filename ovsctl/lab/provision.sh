#!/usr/bin/env bash
# ovsctl/lab/provision.sh: the one provisioning script of the ovsctl labs.
#
# The netns lab (`ovsctl lab up`, so every CI run through tests/e2e) uses `node` for every node
# it creates. The Vagrant lab (vagrant/Vagrantfile) uses all of it on each VM. Run
# `provision.sh --help` or `provision.sh SUBCOMMAND --help` for the details.
set -euo pipefail

PROG=provision.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DEFAULT=$(cd "$HERE/../.." && pwd)
# The Makefile's APT_PKGS and the extras a VM needs (tests/unit/test_vagrant.py checks that
# this stays a superset of the Makefile's list).
APT_PKGS=(openvswitch-switch iproute2 iptables ethtool iputils-ping procps python3-venv
  python3 curl ca-certificates)

usage_main() {
  cat <<EOF
usage: $PROG SUBCOMMAND [FLAGS...]      ($PROG SUBCOMMAND --help for its flags)

Provisioning for the ovsctl labs, one script for both: the netns lab (\`ovsctl lab up\`) runs
\`node\` for every node it creates, and vagrant/Vagrantfile runs it on every VM.

subcommands:
  install   apt packages (Open vSwitch and tools), a venv, \`pip install -e\` of the repo (root)
  node      write a node's agent config (OUT/agent.yaml) and/or its Node object
            (CLUSTER_STATE/Node-NAME.yaml); pure, no root needed
  service   systemd units for the agent (and the lab API server), the CNI shim and conflist
            (root, systemd; VMs only)
  pod       kubelet's part for one pod on this node without Kubernetes: a netns, CNI ADD
            through the shim, a responder on its ports; prints the Pod (with its IP) as YAML
            (root)
  kubeadm   best effort, UNTESTED here: containerd + kubeadm, \`init\` on the first node,
            \`join\` on the others (root, VMs only)
EOF
}

die() { # usage error: nothing was written
  echo "$PROG: $*" >&2
  exit 2
}
fail() {
  echo "$PROG: $*" >&2
  exit 1
}
need_root() { [[ $(id -u) == 0 ]] || fail "$1 must run as root"; }

# value FLAG ARGS...: the flag's value (the next argument), or a usage error.
value() {
  [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value"
  [[ $2 != *$'\n'* ]] || die "$1: the value must be one line"
  printf '%s' "$2"
}

# ---------------------------------------------------------------------------- checks

is_ipv4() {
  local o='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
  [[ $1 =~ ^$o\.$o\.$o\.$o$ ]]
}

ip_int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

int_ip() {
  local n=$1
  echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))"
}

mask_of() { # prefix length -> netmask as an integer
  local p=$1
  ((p == 0)) && echo 0 || echo $(((0xffffffff << (32 - p)) & 0xffffffff))
}

check_ip() { # FLAG VALUE
  is_ipv4 "$2" || die "$1 $2: not an IPv4 address (like 192.168.56.10)"
}

check_cidr() { # FLAG VALUE MAXPREFIX
  local flag=$1 v=$2 max=${3:-32} addr prefix m net
  [[ $v == */* ]] || die "$flag $v: not a CIDR (ADDRESS/PREFIX, like 10.244.0.0/24)"
  addr=${v%/*} prefix=${v#*/}
  is_ipv4 "$addr" || die "$flag $v: not a CIDR (bad address $addr)"
  [[ $prefix =~ ^([0-9]|[12][0-9]|3[0-2])$ ]] || die "$flag $v: not a CIDR (prefix 0..32)"
  ((prefix <= max)) || die "$flag $v: too small (at most /$max)"
  m=$(mask_of "$prefix")
  net=$(($(ip_int "$addr") & m))
  [[ $(int_ip "$net") == "$addr" ]] ||
    die "$flag $v: host bits set (the network is $(int_ip "$net")/$prefix)"
}

cidr_contains() { # OUTER INNER (CIDR or address): is INNER inside OUTER?
  local onet=${1%/*} op=${1#*/} inet=${2%/*} ip=32
  [[ $2 == */* ]] && ip=${2#*/}
  ((ip >= op)) || return 1
  local m
  m=$(mask_of "$op")
  (($(($(ip_int "$inet") & m)) == $(ip_int "$onet")))
}

# IPv6: bash has no 128-bit arithmetic, so Python's ipaddress checks IPv6 values (python3 is
# one of the APT_PKGS). net6 OP FLAG VALUE [ARG]: exit 0, or 1 with the problem on stdout.
#   ip FLAG ADDR          an IPv6 address
#   cidr FLAG CIDR MAX    an IPv6 CIDR, no host bits, prefix at most MAX
#   contains OUTER INNER  is INNER (CIDR or address) inside OUTER?
NET6_PY='
import ipaddress, sys
op, flag, v = sys.argv[1:4]
def fail(msg):
    print(f"{flag} {v}: {msg}")
    sys.exit(1)
if op == "contains":
    outer, inner = ipaddress.ip_network(flag), ipaddress.ip_network(v, strict=False)
    sys.exit(0 if inner.version == outer.version and inner.subnet_of(outer) else 1)
if op == "ip":
    try:
        ipaddress.IPv6Address(v)
    except ValueError:
        fail("not an IPv6 address (like fd00:172:30::a)")
    sys.exit(0)
if "/" not in v:
    fail("not a CIDR (ADDRESS/PREFIX, like fd00:10:244:1::/64)")
addr, prefix = v.split("/", 1)
try:
    ipaddress.IPv6Address(addr)
except ValueError:
    fail(f"not a CIDR (bad address {addr})")
if not prefix.isdigit() or int(prefix) > 128:
    fail("not a CIDR (prefix 0..128)")
net = ipaddress.IPv6Network(v, strict=False)
if net.network_address != ipaddress.IPv6Address(addr):
    fail(f"host bits set (the network is {net})")
if int(prefix) > int(sys.argv[4]):
    fail(f"too small (at most /{sys.argv[4]})")
'
net6() { python3 -I -c "$NET6_PY" "$@"; }

# family VALUE: 6 for an IPv6 address or CIDR, else 4
family() { if [[ $1 == *:* ]]; then echo 6; else echo 4; fi; }

# split_families FLAG VALUE: a comma-separated list (one address or CIDR per family) on
# stdout one per line, IPv4 first; a usage error for an empty item or two of one family.
split_families() {
  local flag=$1 v=$2 item v4="" v6="" items=()
  [[ $v != *, && $v != ,* ]] || die "$flag $v: an empty item (one per IP family, like 10.244.0.0/16,fd00:10:244::/56)"
  IFS=, read -ra items <<<"$v"
  for item in "${items[@]}"; do
    [[ -n $item ]] || die "$flag $v: an empty item (one per IP family, like 10.244.0.0/16,fd00:10:244::/56)"
    if [[ $(family "$item") == 6 ]]; then
      [[ -z $v6 ]] || die "$flag $v: two IPv6 values (at most one per IP family)"
      v6=$item
    else
      [[ -z $v4 ]] || die "$flag $v: two IPv4 values (at most one per IP family)"
      v4=$item
    fi
  done
  [[ -z $v4 ]] || echo "$v4"
  [[ -z $v6 ]] || echo "$v6"
}

check_any_ip() { # FLAG VALUE: IPv4 or IPv6
  local msg
  if [[ $(family "$2") == 6 ]]; then
    msg=$(net6 ip "$1" "$2") || die "$msg"
  else
    check_ip "$1" "$2"
  fi
}

check_any_cidr() { # FLAG VALUE: IPv4 (at most /30) or IPv6 (at most /126)
  local msg
  if [[ $(family "$2") == 6 ]]; then
    msg=$(net6 cidr "$1" "$2" 126) || die "$msg"
  else
    check_cidr "$1" "$2" 30
  fi
}

any_contains() { # OUTER INNER of either family
  if [[ $(family "$1") != "$(family "$2")" ]]; then
    return 1
  elif [[ $(family "$1") == 6 ]]; then
    net6 contains "$1" "$2" >/dev/null
  else
    cidr_contains "$1" "$2"
  fi
}

# yaml_list INDENT VALUES...: a YAML block sequence, one "- VALUE" line each (no final newline)
yaml_list() {
  local indent=$1 v out=""
  shift
  for v in "$@"; do out+="$indent- $(yq "$v")"$'\n'; done
  printf '%s' "${out%$'\n'}"
}

check_name() { # FLAG VALUE: a Kubernetes object name (DNS-1123 subdomain)
  local l='[a-z0-9]([-a-z0-9]*[a-z0-9])?'
  [[ $2 =~ ^$l(\.$l)*$ && ${#2} -le 253 ]] ||
    die "$1 $2: not a valid name (lowercase letters, digits, '-' and '.', like node0)"
}

check_label_name() { # FLAG VALUE: a namespace name (DNS-1123 label)
  [[ $2 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#2} -le 63 ]] ||
    die "$1 $2: not a valid name (lowercase letters, digits and '-', at most 63)"
}

check_abs() { # FLAG VALUE
  [[ $2 == /* ]] || die "$1 $2: must be an absolute path"
}

# A YAML scalar for $1: plain when YAML reads it back as this string, else single-quoted.
yq() {
  local v=$1
  if [[ $v =~ ^[A-Za-z/][A-Za-z0-9_./:@-]*$ && $v != *: &&
    ! ${v,,} =~ ^(true|false|yes|no|on|off|null)$ ]] ||
    [[ $v =~ ^[0-9]+(\.[0-9]+){3}(/[0-9]+)?$ ]]; then
    printf '%s' "$v"
  else
    printf "'%s'" "${v//\'/\'\'}"
  fi
}

# write_atomic PATH CONTENT: a dot-temp file in PATH's directory (hidden from the YAML
# watchers), flushed, then renamed into place; says what it wrote.
write_atomic() {
  local path=$1 content=$2 dir tmp
  dir=$(dirname "$path")
  mkdir -p "$dir"
  tmp="$dir/.${path##*/}.tmp.$$"
  if ! printf '%s' "$content" >"$tmp"; then
    rm -f "$tmp"
    fail "cannot write $path"
  fi
  sync "$tmp" 2>/dev/null || true # durable before the rename (coreutils >= 8.24)
  mv -f "$tmp" "$path" || { rm -f "$tmp" && fail "cannot write $path"; }
  echo "wrote $path"
}

# ---------------------------------------------------------------------------- node

usage_node() {
  cat <<EOF
usage: $PROG node --name NAME [--out DIR] [--cluster-state DIR]
                  [--node-ip IP --pod-cidr CIDR] [--cluster-cidr CIDR]
                  [--source yaml | --source api [--api-server URL] [--kubeconfig FILE]]
                  [--datapath system|netdev] [--ovsdb REMOTE] [--ovs-rundir DIR]
                  [--cni-socket PATH] [--state-dir DIR] [--log-level LEVEL]
                  [--metrics-port PORT] [--lb-pool RANGES]

Writes, each atomically (a dot-temp file renamed into place), and says what it wrote:
  OUT/agent.yaml                the agent's config (\`ovsctl agent --config OUT/agent.yaml\`)
  CLUSTER_STATE/Node-NAME.yaml  the Node object (spec.podCIDR, InternalIP), as the control
                                plane would make it; the agent takes its pod CIDR and node IP
                                from it
At least one of --out and --cluster-state. Everything is checked before anything is written;
bad input exits 2 with a message. Needs no root.

  --name NAME            the node's name (node_name, and the Node object's name)
  --out DIR              write DIR/agent.yaml
  --cluster-state DIR    the directory of cluster YAML: the Node object is written here (needs
                         --node-ip and --pod-cidr); with --source yaml the agent watches it
  --node-ip IP           the Node's InternalIP (the tunnel endpoint); dual-stack: IPv4,IPv6
                         (both InternalIPs; the IPv4 one stays the tunnel endpoint)
  --pod-cidr CIDR        the Node's spec.podCIDR (e.g. 10.244.1.0/24; inside --cluster-cidr);
                         one per family of --cluster-cidr (e.g. 10.244.1.0/24,fd00:10:244:1::/64)
  --cluster-cidr CIDR    every pod CIDR together (default 10.244.0.0/16); one per family for a
                         dual-stack cluster (10.244.0.0/16,fd00:10:244::/56) or one IPv6 CIDR
                         for an IPv6-only one; then agent.yaml gets the lists cluster_cidrs,
                         and with --cluster-state pod_cidrs and node_ips (IPv4 first)
  --source yaml|api      yaml (default): the agent watches --cluster-state;
                         api: the agent lists and watches a Kubernetes API
  --api-server URL       with --source api: the API's URL (e.g. http://192.168.56.10:6443);
                         default in-cluster config, else the kubeconfig
  --kubeconfig FILE      with --source api: a kubeconfig
  --datapath TYPE        system (kernel, default) or netdev (userspace, the netns lab)
  --ovsdb REMOTE         default unix:/run/openvswitch/db.sock
  --ovs-rundir DIR       default /var/run/openvswitch
  --cni-socket PATH      default /run/ovsctl/cni.sock
  --state-dir DIR        the agent's IPAM state (default /var/lib/ovsctl)
  --log-level LEVEL      debug, info (default), warning, error
  --metrics-port PORT    the agent's /metrics /healthz /readyz port (default: the
                         agent's, 9476; 0 = off)
  --lb-pool RANGES       ovsctl's own LoadBalancer pool (lb_pool; Services of
                         loadBalancerClass ovsctl.io/lb): comma-separated CIDRs and ranges
                         A-B, both families (e.g. 172.30.0.176/28,fd00:172:30::b0/124); the
                         agent checks them. Every node needs the same pool
EOF
}

cmd_node() {
  local name="" out="" state="" node_ip="" pod_cidr="" cluster_cidr=10.244.0.0/16
  local source=yaml api_server="" kubeconfig="" datapath=system
  local ovsdb=unix:/run/openvswitch/db.sock ovs_rundir=/var/run/openvswitch
  local cni_socket=/run/ovsctl/cni.sock state_dir=/var/lib/ovsctl log_level=info metrics_port=""
  local lb_pool=""
  while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage_node && exit 0 ;;
    --name) name=$(value "$@") ;;
    --out) out=$(value "$@") ;;
    --cluster-state) state=$(value "$@") ;;
    --node-ip) node_ip=$(value "$@") ;;
    --pod-cidr) pod_cidr=$(value "$@") ;;
    --cluster-cidr) cluster_cidr=$(value "$@") ;;
    --source) source=$(value "$@") ;;
    --api-server) api_server=$(value "$@") ;;
    --kubeconfig) kubeconfig=$(value "$@") ;;
    --datapath) datapath=$(value "$@") ;;
    --ovsdb) ovsdb=$(value "$@") ;;
    --ovs-rundir) ovs_rundir=$(value "$@") ;;
    --cni-socket) cni_socket=$(value "$@") ;;
    --state-dir) state_dir=$(value "$@") ;;
    --log-level) log_level=$(value "$@") ;;
    --metrics-port) metrics_port=$(value "$@") ;;
    --lb-pool) lb_pool=$(value "$@") ;;
    *) die "node: unknown argument $1 (see: $PROG node --help)" ;;
    esac
    shift 2
  done

  [[ -n $name ]] || die "node: --name is required"
  check_name --name "$name"
  [[ -n $out || -n $state ]] || die "node: nothing to write: give --out DIR and/or --cluster-state DIR"
  local cluster_cidrs=() pod_cidrs=() node_ips=() c cc lines
  lines=$(split_families --cluster-cidr "$cluster_cidr") || exit 2
  mapfile -t cluster_cidrs <<<"$lines"
  for c in "${cluster_cidrs[@]}"; do check_any_cidr --cluster-cidr "$c"; done
  case $source in
  yaml)
    [[ -n $state ]] || die "node: --source yaml needs --cluster-state DIR (the agent watches it)"
    [[ -z $api_server && -z $kubeconfig ]] ||
      die "node: --api-server and --kubeconfig go with --source api"
    ;;
  api)
    [[ -z $api_server || $api_server =~ ^https?://[^[:space:]/]+(/[^[:space:]]*)?$ ]] ||
      die "node: --api-server $api_server: not an http(s) URL"
    [[ -z $kubeconfig ]] || check_abs --kubeconfig "$kubeconfig"
    ;;
  *) die "node: --source $source: must be yaml or api" ;;
  esac
  if [[ -n $state ]]; then
    check_abs --cluster-state "$state"
    [[ -n $node_ip ]] || die "node: --cluster-state needs --node-ip (the Node's InternalIP)"
    [[ -n $pod_cidr ]] || die "node: --cluster-state needs --pod-cidr (the Node's spec.podCIDR)"
  elif [[ -n $node_ip || -n $pod_cidr ]]; then
    die "node: --node-ip and --pod-cidr describe the Node object, written only with --cluster-state DIR"
  fi
  if [[ -n $node_ip ]]; then
    lines=$(split_families --node-ip "$node_ip") || exit 2
    mapfile -t node_ips <<<"$lines"
    for c in "${node_ips[@]}"; do
      check_any_ip --node-ip "$c"
      for cc in "${cluster_cidrs[@]}"; do
        ! any_contains "$cc" "$c" || die "node: --node-ip $c is inside the cluster CIDR $cc"
      done
    done
    [[ $(family "${node_ips[0]}") == 4 ]] ||
      die "node: --node-ip $node_ip: needs an IPv4 address too (the VXLAN tunnel endpoint)"
  fi
  if [[ -n $pod_cidr ]]; then
    lines=$(split_families --pod-cidr "$pod_cidr") || exit 2
    mapfile -t pod_cidrs <<<"$lines"
    for c in "${pod_cidrs[@]}"; do
      check_any_cidr --pod-cidr "$c"
      local inside=""
      for cc in "${cluster_cidrs[@]}"; do
        ! any_contains "$cc" "$c" || inside=$cc
      done
      [[ -n $inside ]] || die "node: --pod-cidr $c is not inside the cluster CIDR $cluster_cidr"
    done
    ((${#pod_cidrs[@]} == ${#cluster_cidrs[@]})) ||
      die "node: --pod-cidr $pod_cidr: needs one pod CIDR per family of --cluster-cidr $cluster_cidr"
  fi
  # One IPv4 cluster CIDR: agent.yaml and the Node exactly as before dual-stack existed.
  local single=1
  if ((${#cluster_cidrs[@]} > 1 || ${#node_ips[@]} > 1)) ||
    [[ $(family "${cluster_cidrs[0]}") == 6 ]]; then
    single=0
  fi
  [[ $datapath == system || $datapath == netdev ]] ||
    die "node: --datapath $datapath: must be system or netdev"
  [[ $log_level =~ ^(debug|info|warning|error)$ ]] ||
    die "node: --log-level $log_level: must be debug, info, warning or error"
  [[ -z $metrics_port || ($metrics_port =~ ^[0-9]{1,5}$ && $metrics_port -le 65535) ]] ||
    die "node: --metrics-port $metrics_port: must be 0..65535"
  [[ $ovsdb =~ ^(unix:/|tcp:|ssl:)[^[:space:]]+$ ]] ||
    die "node: --ovsdb $ovsdb: must be unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"
  [[ -z $out ]] || check_abs --out "$out"
  check_abs --ovs-rundir "$ovs_rundir"
  check_abs --cni-socket "$cni_socket"
  check_abs --state-dir "$state_dir"

  # Nothing is written before every check has passed.
  if [[ -n $out ]]; then
    # Keys in sorted order (as yaml.safe_dump writes them); keys of ovsctl/config.py.
    local conf="# ovsctl agent config for node $name, written by ovsctl/lab/provision.sh node"$'\n'
    [[ -z $api_server ]] || conf+="api_server: $(yq "$api_server")"$'\n'
    if ((single)); then
      conf+="cluster_cidr: $(yq "$cluster_cidr")"$'\n'
    else
      conf+="cluster_cidrs:"$'\n'"$(yaml_list "" "${cluster_cidrs[@]}")"$'\n'
    fi
    [[ $source != yaml ]] || conf+="cluster_state: $(yq "$state")"$'\n'
    conf+="cni_socket: $(yq "$cni_socket")"$'\n'
    conf+="datapath_type: $datapath"$'\n'
    [[ -z $kubeconfig ]] || conf+="kubeconfig: $(yq "$kubeconfig")"$'\n'
    if [[ -n $lb_pool ]]; then
      local pool=()
      IFS=, read -ra pool <<<"$lb_pool"
      conf+="lb_pool:"$'\n'"$(yaml_list "" "${pool[@]}")"$'\n'
    fi
    conf+="log_level: $log_level"$'\n'
    [[ -z $metrics_port ]] || conf+="metrics_port: $((10#$metrics_port))"$'\n'
    if ((!single && ${#node_ips[@]})); then
      conf+="node_ips:"$'\n'"$(yaml_list "" "${node_ips[@]}")"$'\n'
    fi
    conf+="node_name: $(yq "$name")"$'\n'
    conf+="ovs_rundir: $(yq "$ovs_rundir")"$'\n'
    conf+="ovsdb: $(yq "$ovsdb")"$'\n'
    if ((!single && ${#pod_cidrs[@]})); then
      conf+="pod_cidrs:"$'\n'"$(yaml_list "" "${pod_cidrs[@]}")"$'\n'
    fi
    conf+="source: $source"$'\n'
    conf+="state_dir: $(yq "$state_dir")"$'\n'
    write_atomic "$out/agent.yaml" "$conf"
  fi
  # kubernetes.io/hostname, as kubelet labels every Node (a label value: at most 63 characters)
  local labels=""
  ((${#name} > 63)) || labels="  labels:"$'\n'"    kubernetes.io/hostname: $name"$'\n'
  if [[ -n $state ]] && ((!single)); then
    # A dual-stack (or IPv6-only) Node: one pod CIDR and one InternalIP per family.
    local addrs="" a
    for a in "${node_ips[@]}"; do
      addrs+="  - address: $(yq "$a")"$'\n'"    type: InternalIP"$'\n'
    done
    write_atomic "$state/Node-$name.yaml" "apiVersion: v1
kind: Node
metadata:
${labels}  name: $name
spec:
  podCIDR: $(yq "${pod_cidrs[0]}")
  podCIDRs:
$(yaml_list "  " "${pod_cidrs[@]}")
status:
  addresses:
$addrs"
  elif [[ -n $state ]]; then
    # The shape of ovsctl.k8s.model.to_dict(Node): what the lab wrote before this script.
    write_atomic "$state/Node-$name.yaml" "apiVersion: v1
kind: Node
metadata:
${labels}  name: $name
spec:
  podCIDR: $pod_cidr
  podCIDRs:
  - $pod_cidr
status:
  addresses:
  - address: $node_ip
    type: InternalIP
"
  fi
}

# ---------------------------------------------------------------------------- install

usage_install() {
  cat <<EOF
usage: $PROG install [--repo DIR] [--venv DIR] [--extras EXTRAS] [--no-apt]

What \`make deps\` does, for a fresh VM (root): installs the apt packages
(${APT_PKGS[*]})
unless they are all there, creates the venv and installs the repo into it with
\`pip install -e\`. Idempotent.

  --repo DIR       the ovsctl checkout (default $REPO_DEFAULT)
  --venv DIR       the venv (default REPO/.venv, as the Makefile)
  --extras EXTRAS  pip extras, e.g. test (default none)
  --no-apt         skip the apt packages
EOF
}

cmd_install() {
  local repo=$REPO_DEFAULT venv="" extras="" apt=1
  while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage_install && exit 0 ;;
    --repo) repo=$(value "$@") ;;
    --venv) venv=$(value "$@") ;;
    --extras) extras=$(value "$@") ;;
    --no-apt) apt=0 && shift && continue ;;
    *) die "install: unknown argument $1 (see: $PROG install --help)" ;;
    esac
    shift 2
  done
  [[ -f $repo/setup.cfg && -d $repo/ovsctl ]] || die "install: --repo $repo is not an ovsctl checkout"
  venv=${venv:-$repo/.venv}
  if ((apt)) && ! dpkg -s "${APT_PKGS[@]}" >/dev/null 2>&1; then
    need_root "install (apt packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${APT_PKGS[@]}"
  fi
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$repo${extras:+[$extras]}"
  echo "installed ovsctl from $repo into $venv"
}

# ---------------------------------------------------------------------------- service

usage_service() {
  cat <<EOF
usage: $PROG service --config FILE [--venv DIR] [--repo DIR] [--cni-socket PATH]
                     [--apiserver-state DIR --apiserver-listen HOST:PORT] [--root DIR]

On a VM (root, systemd): starts Open vSwitch (openvswitch-switch), installs and (re)starts
  ovsctl-apiserver.service  with --apiserver-state: the lab's Kubernetes API (list/watch)
                            serving that directory of YAML (python -m ovsctl.lab.apiserver)
  ovsctl-agent.service      \`ovsctl agent --config FILE\`, restarted when it exits
and installs the CNI shim as /opt/cni/bin/ovsctl-cni and /etc/cni/net.d/10-ovsctl.conflist
(each copied next to its target and renamed into place).

  --config FILE            the agent config (from \`$PROG node --out\`)
  --venv DIR               where \`$PROG install\` put ovsctl (default REPO/.venv)
  --repo DIR               the ovsctl checkout (default $REPO_DEFAULT)
  --cni-socket PATH        the agent's CNI socket, for the conflist (default /run/ovsctl/cni.sock)
  --apiserver-state DIR    also run the lab API server on this state directory
  --apiserver-listen H:P   its address (e.g. 192.168.56.10:6443)
  --root DIR               write the files under DIR instead of / and leave systemd and Open
                           vSwitch alone (for tests and image builds; no root needed)
EOF
}

install_file() { # SRC DEST MODE: copy next to DEST, then rename into place
  local tmp
  mkdir -p "$(dirname "$2")"
  tmp="$(dirname "$2")/.${2##*/}.tmp.$$"
  install -m "$3" "$1" "$tmp"
  mv -f "$tmp" "$2"
  echo "installed $2"
}

cmd_service() {
  local config="" repo=$REPO_DEFAULT venv="" cni_socket=/run/ovsctl/cni.sock api_state="" api_listen=""
  local root=""
  while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage_service && exit 0 ;;
    --config) config=$(value "$@") ;;
    --venv) venv=$(value "$@") ;;
    --repo) repo=$(value "$@") ;;
    --cni-socket) cni_socket=$(value "$@") ;;
    --apiserver-state) api_state=$(value "$@") ;;
    --apiserver-listen) api_listen=$(value "$@") ;;
    --root) root=$(value "$@") ;;
    *) die "service: unknown argument $1 (see: $PROG service --help)" ;;
    esac
    shift 2
  done
  [[ -n $config ]] || die "service: --config is required"
  check_abs --config "$config"
  check_abs --cni-socket "$cni_socket"
  if [[ -n $api_state || -n $api_listen ]]; then
    [[ -n $api_state && -n $api_listen ]] ||
      die "service: --apiserver-state and --apiserver-listen go together"
    check_abs --apiserver-state "$api_state"
    [[ $api_listen =~ ^[^[:space:]:]+:[0-9]{1,5}$ ]] ||
      die "service: --apiserver-listen $api_listen: must be HOST:PORT"
  fi
  [[ -z $root ]] || check_abs --root "$root"
  venv=${venv:-$repo/.venv}
  if [[ -z $root ]]; then
    need_root service
    command -v systemctl >/dev/null || fail "service: needs systemd (systemctl)"
    [[ -f $config ]] || fail "service: no agent config $config (write it with: $PROG node --out)"
    [[ -x $venv/bin/python ]] || fail "service: no venv at $venv (run: $PROG install --venv $venv)"
    systemctl enable --now openvswitch-switch
  fi
  local units=()
  if [[ -n $api_state ]]; then
    mkdir -p "$root$api_state"
    write_atomic "$root/etc/systemd/system/ovsctl-apiserver.service" "[Unit]
Description=ovsctl lab: Kubernetes API (list/watch) serving $api_state
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$venv/bin/python -m ovsctl.lab.apiserver --state $api_state --listen $api_listen
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"
    units+=(ovsctl-apiserver.service)
  fi
  write_atomic "$root/etc/systemd/system/ovsctl-agent.service" "[Unit]
Description=ovsctl agent (Open vSwitch network plugin)
After=network-online.target openvswitch-switch.service${api_state:+ ovsctl-apiserver.service}
Wants=network-online.target
Requires=openvswitch-switch.service

[Service]
ExecStart=$venv/bin/python -m ovsctl.cli agent --config $config
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"
  units+=(ovsctl-agent.service)
  # the plugin module beside its launcher, the module first (the launcher runs it)
  install_file "$repo/cni-shim/ovsctl_cni.py" "$root/opt/cni/bin/ovsctl_cni.py" 0644
  install_file "$repo/cni-shim/ovsctl-cni" "$root/opt/cni/bin/ovsctl-cni" 0755
  local conflist
  conflist=$(mktemp)
  cat >"$conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "ovsctl",
  "plugins": [
    {
      "type": "ovsctl-cni",
      "socket": "$cni_socket",
      "timeout": 60,
      "capabilities": {"ips": true, "mac": true}
    }
  ]
}
EOF
  install_file "$conflist" "$root/etc/cni/net.d/10-ovsctl.conflist" 0644
  rm -f "$conflist"
  [[ -z $root ]] || return 0
  systemctl daemon-reload
  systemctl enable "${units[@]}"
  systemctl restart "${units[@]}"
  echo "started ${units[*]}"
}

# ---------------------------------------------------------------------------- pod

usage_pod() {
  cat <<EOF
usage: $PROG pod add --namespace NS --name NAME [--node NODE] [--label KEY=VALUE]...
                     [--port [PORTNAME:]PORT[/TCP|/UDP|/SCTP]]... [--out FILE]
                     [--netns NAME] [--cni-socket PATH] [--shim PATH] [--python PY]
                     [--run-dir DIR]
       $PROG pod del --namespace NS --name NAME [--netns NAME] [--cni-socket PATH]
                     [--shim PATH] [--run-dir DIR]

Kubelet's part for one pod on this node, for a lab without Kubernetes (root): \`add\` makes
the network namespace, runs CNI ADD through the shim exactly as kubelet would, starts a
responder on each TCP/UDP port (it answers "CLIENT_IP POD_IP") and prints the Pod, with
nodeName, podIP and Ready, as Kubernetes YAML (to FILE with --out, written atomically): put it
into the cluster state so that policies and Services see the pod. \`del\` runs CNI DEL, stops
the responder and removes the namespace.

  --namespace NS    the pod's namespace          --name NAME   the pod's name
  --node NODE       spec.nodeName (default: this host's name)
  --label K=V       a label (repeatable)         --port P      a containerPort (repeatable)
  --out FILE        write the Pod YAML there instead of stdout
  --netns NAME      the network namespace (default pod.NS.NAME)
  --cni-socket PATH the agent's CNI socket (default /run/ovsctl/cni.sock)
  --shim PATH       the CNI plugin (default /opt/cni/bin/ovsctl-cni, else the repo's)
  --python PY       the interpreter for the responder (default python3)
  --run-dir DIR     container ids, responder PIDs and logs (default /run/ovsctl-pods)
EOF
}

cmd_pod() {
  local action=${1:-}
  [[ $action == -h || $action == --help ]] && usage_pod && exit 0
  [[ $action == add || $action == del ]] || die "pod: add or del (see: $PROG pod --help)"
  shift
  local ns="" name="" node="" out="" netns="" sock=/run/ovsctl/cni.sock shim="" py=python3
  local run_dir=/run/ovsctl-pods labels=() ports=()
  while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage_pod && exit 0 ;;
    --namespace) ns=$(value "$@") ;;
    --name) name=$(value "$@") ;;
    --node) node=$(value "$@") ;;
    --label) labels+=("$(value "$@")") ;;
    --port) ports+=("$(value "$@")") ;;
    --out) out=$(value "$@") ;;
    --netns) netns=$(value "$@") ;;
    --cni-socket) sock=$(value "$@") ;;
    --shim) shim=$(value "$@") ;;
    --python) py=$(value "$@") ;;
    --run-dir) run_dir=$(value "$@") ;;
    *) die "pod: unknown argument $1 (see: $PROG pod --help)" ;;
    esac
    shift 2
  done
  [[ -n $ns && -n $name ]] || die "pod: --namespace and --name are required"
  check_label_name --namespace "$ns"
  check_name --name "$name"
  node=${node:-$(hostname)}
  check_name --node "$node"
  netns=${netns:-pod.$ns.$name}
  [[ $netns =~ ^[A-Za-z0-9_.-]+$ && ${#netns} -le 200 ]] || die "pod: --netns $netns: not a usable name"
  check_abs --cni-socket "$sock"
  check_abs --run-dir "$run_dir"
  [[ -z $out ]] || check_abs --out "$out"
  local l p
  for l in "${labels[@]}"; do
    [[ $l =~ ^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?=([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?$ ]] ||
      die "pod: --label $l: not KEY=VALUE with a valid label key and value"
  done
  for p in "${ports[@]}"; do
    if ! [[ $p =~ ^([a-z0-9]([-a-z0-9]*[a-z0-9])?:)?([0-9]{1,5})(/(TCP|UDP|SCTP))?$ ]] ||
      ((10#${BASH_REMATCH[3]} < 1 || 10#${BASH_REMATCH[3]} > 65535)); then
      die "pod: --port $p: not [NAME:]PORT[/TCP|/UDP|/SCTP] (like http:80/TCP)"
    fi
  done
  if [[ -z $shim ]]; then
    shim=/opt/cni/bin/ovsctl-cni
    [[ -x $shim ]] || shim=$REPO_DEFAULT/cni-shim/ovsctl-cni
  fi
  need_root pod
  local key=$ns.$name cid
  cid=$(printf 'ovsctl-lab-pod/%s/%s' "$ns" "$name" | sha256sum | cut -c1-32)
  local cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=$ns;K8S_POD_NAME=$name;K8S_POD_INFRA_CONTAINER_ID=$cid"
  local conf="{\"cniVersion\": \"1.0.0\", \"name\": \"ovsctl\", \"type\": \"ovsctl-cni\", \"socket\": \"$sock\"}"
  cni() { # COMMAND: the shim as kubelet runs it
    env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$cid" CNI_NETNS="/var/run/netns/$netns" \
      CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin CNI_ARGS="$cni_args" "$shim" <<<"$conf"
  }

  if [[ $action == del ]]; then
    if [[ -f $run_dir/$key.pid ]]; then
      local pid
      pid=$(<"$run_dir/$key.pid")
      if grep -qa responder.py "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" || true; fi
    fi
    cni DEL >/dev/null || echo "$PROG: CNI DEL $ns/$name failed (continuing)" >&2
    ip netns del "$netns" 2>/dev/null || true
    rm -f "$run_dir/$key.pid" "$run_dir/$key.log"
    echo "pod $ns/$name deleted" >&2
    return
  fi

  ip netns add "$netns" 2>/dev/null || ip netns pids "$netns" >/dev/null ||
    fail "pod: cannot make network namespace $netns"
  local result ip
  if ! result=$(cni ADD); then
    ip netns del "$netns" 2>/dev/null || true
    fail "pod: CNI ADD $ns/$name failed: $result"
  fi
  ip=$("$py" -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$result")
  mkdir -p "$run_dir"
  local args=() pname pnum proto yports=""
  for p in "${ports[@]}"; do
    [[ $p =~ ^(([-a-z0-9]+):)?([0-9]+)(/([A-Z]+))?$ ]]
    pname=${BASH_REMATCH[2]} pnum=$((10#${BASH_REMATCH[3]})) proto=${BASH_REMATCH[5]:-TCP}
    [[ $proto == SCTP ]] || args+=("--${proto,,}" "$pnum")
    yports+="    - containerPort: $pnum"$'\n'
    [[ -z $pname ]] || yports+="      name: $pname"$'\n'
    yports+="      protocol: $proto"$'\n'
  done
  if ((${#args[@]})); then
    setsid ip netns exec "$netns" "$py" "$HERE/responder.py" --tag "$run_dir" "${args[@]}" \
      </dev/null >>"$run_dir/$key.log" 2>&1 &
    echo $! >"$run_dir/$key.pid"
  fi
  local ylabels=""
  for l in "${labels[@]}"; do
    ylabels+="    $(yq "${l%%=*}"): '${l#*=}'"$'\n'
  done
  local pod="apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $ns
${ylabels:+  labels:
$ylabels}spec:
  nodeName: $node
  containers:
  - name: app
    image: none
${yports:+    ports:
$yports}status:
  phase: Running
  podIP: $ip
  conditions:
  - type: Ready
    status: 'True'
"
  if [[ -n $out ]]; then
    write_atomic "$out" "$pod" >&2
  else
    printf '%s' "$pod"
  fi
  echo "pod $ns/$name on $node: $ip (netns $netns)" >&2
}

# ---------------------------------------------------------------------------- kubeadm

usage_kubeadm() {
  cat <<EOF
usage: $PROG kubeadm init --node-ip IP --token TOKEN [--pod-network-cidr CIDR]
                          [--k8s-version vX.Y] [--repo DIR]
       $PROG kubeadm join --node-ip IP --token TOKEN --control-plane IP:PORT
                          [--k8s-version vX.Y]

BEST EFFORT, UNTESTED in this repository's CI (it needs VMs with internet access): a real
Kubernetes cluster for the Vagrant lab (root, Debian/Ubuntu VMs). Both install containerd and
kubelet/kubeadm/kubectl (pkgs.k8s.io, default v1.30), load br_netfilter, turn swap off and pin
kubelet's --node-ip. \`init\` runs \`kubeadm init\` with the given bootstrap token (so the
other nodes can join without copying anything from this one) and --pod-network-cidr (default
10.244.0.0/16, so the controller manager allocates each Node's podCIDR; dual-stack: one CIDR
per family, 10.244.0.0/16,fd00:10:244::/56, and --node-ip IPv4,IPv6: then the Services get
10.96.0.0/12,fd00:10:96::/112), applies
manifests/00-namespace.yaml and 01-rbac.yaml and binds the ovsctl-agent ClusterRole to the
group system:nodes, so that an agent running on the node with kubelet's kubeconfig
(/etc/kubernetes/kubelet.conf) may list and watch what it needs. \`join\` joins with the token
(--discovery-token-unsafe-skip-ca-verification: a lab shortcut). The agent config then comes
from: $PROG node --source api --kubeconfig /etc/kubernetes/kubelet.conf --out DIR
EOF
}

k8s_packages() { # VERSION
  export DEBIAN_FRONTEND=noninteractive
  swapoff -a
  sed -i '/\sswap\s/s/^/#/' /etc/fstab
  printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/k8s.conf
  modprobe overlay
  modprobe br_netfilter
  printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n' >/etc/sysctl.d/k8s.conf
  sysctl --system >/dev/null
  apt-get update -qq
  apt-get install -y -qq containerd apt-transport-https ca-certificates curl gpg
  mkdir -p /etc/containerd /etc/apt/keyrings
  containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >/etc/containerd/config.toml
  systemctl restart containerd
  curl -fsSL "https://pkgs.k8s.io/core:/stable:/$1/deb/Release.key" |
    gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
  echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/$1/deb/ /" \
    >/etc/apt/sources.list.d/kubernetes.list
  apt-get update -qq
  apt-get install -y -qq kubelet kubeadm kubectl
  apt-mark hold kubelet kubeadm kubectl
}

cmd_kubeadm() {
  local action=${1:-}
  [[ $action == -h || $action == --help ]] && usage_kubeadm && exit 0
  [[ $action == init || $action == join ]] || die "kubeadm: init or join (see: $PROG kubeadm --help)"
  shift
  local node_ip="" token="" cidr=10.244.0.0/16 version=v1.30 cp="" repo=$REPO_DEFAULT
  while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage_kubeadm && exit 0 ;;
    --node-ip) node_ip=$(value "$@") ;;
    --token) token=$(value "$@") ;;
    --pod-network-cidr) cidr=$(value "$@") ;;
    --k8s-version) version=$(value "$@") ;;
    --control-plane) cp=$(value "$@") ;;
    --repo) repo=$(value "$@") ;;
    *) die "kubeadm: unknown argument $1 (see: $PROG kubeadm --help)" ;;
    esac
    shift 2
  done
  local ips=() cidrs=() lines c
  lines=$(split_families --node-ip "$node_ip") || exit 2
  mapfile -t ips <<<"$lines"
  for c in "${ips[@]}"; do check_any_ip --node-ip "$c"; done
  [[ $(family "${ips[0]}") == 4 ]] || die "kubeadm: --node-ip $node_ip: needs an IPv4 address"
  [[ $token =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || die "kubeadm: --token: must look like abcdef.0123456789abcdef"
  lines=$(split_families --pod-network-cidr "$cidr") || exit 2
  mapfile -t cidrs <<<"$lines"
  for c in "${cidrs[@]}"; do check_any_cidr --pod-network-cidr "$c"; done
  # dual-stack: the Services get a ClusterIP range per family too
  local service_cidr=10.96.0.0/12
  ((${#cidrs[@]} == 1)) || service_cidr=10.96.0.0/12,fd00:10:96::/112
  [[ $version =~ ^v1\.[0-9]+$ ]] || die "kubeadm: --k8s-version $version: like v1.30"
  [[ $action == init || $cp =~ ^[0-9.]+:[0-9]+$ ]] || die "kubeadm join: --control-plane IP:PORT is required"
  need_root kubeadm
  if [[ -f /etc/kubernetes/kubelet.conf ]]; then
    echo "kubeadm: this node is already part of a cluster (/etc/kubernetes/kubelet.conf)"
    return
  fi
  k8s_packages "$version"
  echo "KUBELET_EXTRA_ARGS=--node-ip=$node_ip" >/etc/default/kubelet
  systemctl restart kubelet || true
  if [[ $action == init ]]; then
    kubeadm init --apiserver-advertise-address "${ips[0]}" --pod-network-cidr "$cidr" \
      --service-cidr "$service_cidr" \
      --token "$token" --token-ttl 0 --node-name "$(hostname)"
    export KUBECONFIG=/etc/kubernetes/admin.conf
    mkdir -p /root/.kube && cp /etc/kubernetes/admin.conf /root/.kube/config
    if id vagrant >/dev/null 2>&1; then
      install -d -o vagrant -g vagrant /home/vagrant/.kube
      install -o vagrant -g vagrant -m 0600 /etc/kubernetes/admin.conf /home/vagrant/.kube/config
    fi
    kubectl apply -f "$repo/manifests/00-namespace.yaml" -f "$repo/manifests/01-rbac.yaml"
    kubectl create clusterrolebinding ovsctl-agent-nodes --clusterrole ovsctl-agent \
      --group system:nodes --dry-run=client -o yaml | kubectl apply -f -
  else
    kubeadm join "$cp" --token "$token" --discovery-token-unsafe-skip-ca-verification \
      --node-name "$(hostname)"
  fi
}

# ---------------------------------------------------------------------------- main

main() {
  local sub=${1:-}
  [[ $# -gt 0 ]] && shift
  case $sub in
  -h | --help | help) usage_main ;;
  node) cmd_node "$@" ;;
  install) cmd_install "$@" ;;
  service) cmd_service "$@" ;;
  pod) cmd_pod "$@" ;;
  kubeadm) cmd_kubeadm "$@" ;;
  "") usage_main >&2 && exit 2 ;;
  *) die "unknown subcommand $sub (see: $PROG --help)" ;;
  esac
}

main "$@"
