module sentient.dev/bench/compare

go 1.22
