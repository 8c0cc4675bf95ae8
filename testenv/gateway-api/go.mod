// The Gateway API release whose standard-channel CRDs testenv/build.sh installs into the test
// API server (its config/crd/standard files, read from the module; nothing is built from it).
module dermaga.test/testenv/gateway-api

go 1.26

require sigs.k8s.io/gateway-api v1.6.3
