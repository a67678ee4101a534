// Command kube-apiserver is the upstream kube-apiserver, unchanged: the same
// main as k8s.io/kubernetes/cmd/kube-apiserver, built here so that Sluice's
// integration tests need no prebuilt binaries.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
