// Command kube-controller-manager is the upstream kube-controller-manager, unchanged: the same main as
// k8s.io/kubernetes/cmd/kube-controller-manager, built here so that Sluice's dev cluster needs no
// prebuilt binaries.
package main

import (
	"os"

	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	command := app.NewControllerManagerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
