module golden-go

// The Go release of the image the Dockerfile builds with (golang:1.23-bookworm).
go 1.23
