# hellohi: every target runs from the repo root and uses the project's own .venv.
# The first target that needs Python creates .venv and installs the pinned requirements.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

HOST   ?= 127.0.0.1
PORT   ?= 5000
SERVER ?= 127.0.0.1:5000
NAME   ?=
STORE  ?= hellohi-tcp.sqlite3

.PHONY: help venv test demo-tcp demo-udp server-tcp client-tcp server-udp client-udp bench report clean

help:
	@echo "make demo-tcp      narrated TCP demo on loopback"
	@echo "make test          run the test suite"
	@echo "make server-tcp HOST=0.0.0.0 PORT=5000"
	@echo "make client-tcp SERVER=host:5000 NAME=alice"

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hellohi needs Python 3.10 or newer; found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo-tcp: $(STAMP)
	$(PY) -m tcp.demo

server-tcp: $(STAMP)
	$(PY) -m tcp.server --host $(HOST) --port $(PORT) --store $(STORE)

client-tcp: $(STAMP)
	$(PY) -m tcp.client --server $(SERVER) $(if $(NAME),--name $(NAME))

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
