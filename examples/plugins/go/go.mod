module wasp.dev/plugins/local-first

go 1.24
