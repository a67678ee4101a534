// Command etcd is the upstream etcd server, unchanged: the same main as
// go.etcd.io/etcd/server/v3, built here so that Sluice's integration tests
// need no prebuilt binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
