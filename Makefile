# Two commands: `make demo` (install, then compress and decompress the bundled sample photo)
# and `make test` (install, then run the test suite). Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo-output

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: install
	mkdir -p $(DEMO)
	$(BIN)/xcodec encode xcodec/samples/chelsea.png -q 4 -o $(DEMO)/chelsea.xsc --force
	$(BIN)/xcodec decode $(DEMO)/chelsea.xsc -o $(DEMO)/chelsea.png --force
	$(BIN)/xcodec compare xcodec/samples/chelsea.png $(DEMO)/chelsea.png

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO)
