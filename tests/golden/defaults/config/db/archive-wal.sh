#!/bin/sh
# PostgreSQL's archive_command (compose.yaml): sh archive-wal.sh %p %f, run by the server in its
# data directory. Keeps each finished WAL segment, gzipped, under the archive volume in a directory
# per cluster (its system identifier): a cluster made anew after a lost volume starts its segment
# names from the beginning again, and must not collide with the old cluster's archive.
# Exit 0 only once the file is durably in place: the server then recycles the segment.
set -eu
src=$1
name=$2
archive=${WAL_ARCHIVE_DIR:-/var/lib/postgresql/wal-archive}
# The first 8 bytes of pg_control: the system identifier, in the machine's byte order.
cluster=$(od -An -tu8 -N8 global/pg_control | tr -d ' ')
dir=$archive/$cluster
target=$dir/$name.gz
mkdir -p "$dir"
if [ -f "$target" ]; then
	# Archived before the server heard of it (a crash in between): fine if it is the same segment.
	gzip -c -n <"$src" | cmp -s - "$target"
	exit
fi
gzip -c -n <"$src" >"$target.tmp"
sync "$target.tmp"
mv "$target.tmp" "$target"
sync "$dir"
