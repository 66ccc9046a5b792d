# Thin wrapper over CMake for the two commands in the README.
#   make run    install what is missing, build (release) and start on the embedded default
#   make test   install what is missing, build with ASan+UBSan and run every test
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all run test build build-test deps deps-test format check-format clean

all: build

deps:
	@scripts/deps.sh run

deps-test:
	@scripts/deps.sh test

build: deps
	cmake -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD)/release -j $(JOBS)

run: build
	./$(BUILD)/release/drover serve

build-test: deps-test
	CC=clang cmake -S . -B $(BUILD)/test -DCMAKE_BUILD_TYPE=Debug -DDROVER_SANITIZE=ON -DDROVER_FUZZ=ON >/dev/null
	cmake --build $(BUILD)/test -j $(JOBS)

# The release build (gcc, -O2) is built too: its warnings differ from clang's,
# and `make run` must keep compiling.
test: build-test build
	scripts/check-format.sh
	scripts/check-banned.sh
	cd $(BUILD)/test && ctest --output-on-failure -j 2

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'fuzz/*.c')

check-format:
	scripts/check-format.sh

clean:
	rm -rf $(BUILD)
