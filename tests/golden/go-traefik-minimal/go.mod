module golden-go

// The Go release of the image the Dockerfile builds with (golang:1.27-bookworm).
go 1.27
