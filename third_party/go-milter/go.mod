module github.com/d--j/go-milter

go 1.24.0

require (
	github.com/emersion/go-message v0.18.2
	golang.org/x/net v0.43.0
	golang.org/x/text v0.28.0
)

require (
	golang.org/x/mod v0.27.0 // indirect
	golang.org/x/sync v0.16.0 // indirect
	golang.org/x/tools v0.36.0 // indirect
)

tool golang.org/x/tools/cmd/stringer
