// The etcd server binary: etcd's own entry point, built from the published go.etcd.io/etcd/server/v3
// module (the repository's root main package cannot be built outside its repository because of its
// replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
