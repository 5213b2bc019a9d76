#!/bin/sh
# Builds the vSphere simulator launcher OFFLINE from Debian's govmomi package
# (apt-get install -y golang-go golang-github-vmware-govmomi-dev) into tools/vcsim/bin/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/chunkvault/vcsim" "$here/bin"
cp "$here/main.go" "$gopath/src/chunkvault/vcsim/"
cd "$gopath/src/chunkvault/vcsim"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOCACHE="${GOCACHE:-$here/bin/.gocache}" \
  go build -o "$here/bin/vcsim-launcher" .
