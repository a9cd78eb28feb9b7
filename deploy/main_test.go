// Package deploy_test checks the files an operator deploys beside the
// proxy: the Prometheus rules under prometheus/ with promtool, and the
// rules, the Grafana dashboard and the documented queries against a real
// Prometheus that scrapes a real proxy.
package deploy_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
