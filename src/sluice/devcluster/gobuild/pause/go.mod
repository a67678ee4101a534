// The pod sandbox (pause) binary for the Sluice dev cluster: standard library only.
module sluice.dev/devcluster/pause

go 1.22
