module golden-go

// go 1.19: the oldest toolchain the deployment's test lab builds with (newer ones build it too).
go 1.19
