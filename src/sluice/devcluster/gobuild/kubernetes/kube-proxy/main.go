// Command kube-proxy is the upstream kube-proxy, unchanged: the same main as
// k8s.io/kubernetes/cmd/kube-proxy, built here so that Sluice's dev cluster needs no
// prebuilt binaries.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	code := cli.Run(command)
	os.Exit(code)
}
