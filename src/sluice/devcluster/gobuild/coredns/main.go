// Command coredns is upstream CoreDNS with only the plugins Sluice's dev cluster
// uses (the DNS pods see: Services and pods by name, from the API server), so it
// builds in a fraction of the time of the full plugin set. The chain order is
// upstream's (core/dnsserver/zdirectives.go), restricted to these plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	dnsserver.Directives = []string{"bind", "ready", "errors", "kubernetes"}
	coremain.Run()
}
