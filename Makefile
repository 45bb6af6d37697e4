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
STORE  ?=
ARGS   ?=

# A value as one shell word, for a folder or file name with spaces (or quotes) in it:
# 'my results' -> 'my results', Bob's -> 'Bob'\''s'.
quote = '$(subst ','\'',$(1))'

.PHONY: help venv test demo-tcp demo-udp server-tcp client-tcp server-udp client-udp bench report clean

help:
	@echo "make demo-tcp      narrated TCP demo on loopback"
	@echo "make test          run the test suite"
	@echo "make server-tcp HOST=0.0.0.0 PORT=5000"
	@echo "make client-tcp SERVER=host:5000 NAME=alice"
	@echo "make demo-udp      narrated UDP demo: acks, retransmission, 20% loss, plain mode"
	@echo "make server-udp HOST=0.0.0.0 PORT=5000 [ARGS='--loss 0.1']"
	@echo "make client-udp SERVER=host:5000 NAME=alice [ARGS='--plain' or '--loss 0.2']"
	@echo "make bench         quick TCP/UDP bench on loopback into results/latest (under 2 min)"
	@echo "make bench-full    the larger --full matrix (+ emulated hosts when run as root; about 11 min)"
	@echo "make report        report.md, charts and lab handout from results/latest"

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
	$(PY) -m tcp.server --host $(HOST) --port $(PORT) --store $(call quote,$(or $(STORE),hellohi-tcp.sqlite3)) $(ARGS)

client-tcp: $(STAMP)
	$(PY) -m tcp.client --server $(SERVER) $(if $(NAME),--name '$(NAME)') $(ARGS)

demo-udp: $(STAMP)
	$(PY) -m udp.demo

server-udp: $(STAMP)
	$(PY) -m udp.server --host $(HOST) --port $(PORT) --store $(call quote,$(or $(STORE),hellohi-udp.sqlite3)) $(ARGS)

client-udp: $(STAMP)
	$(PY) -m udp.client --server $(SERVER) $(if $(NAME),--name '$(NAME)') $(ARGS)

# The bench: results/latest/results.json (+ .csv), then `make report` turns it into
# results/latest/report/{report.md, *.png, handout.md}. The quick matrix stays on loopback
# (--no-emulation) so it finishes in under 2 minutes on 2 cores (72-81 s measured) with tcp, udp, udp-raw
# and udp-turbo; as root, add emulated hosts with BENCH_ARGS="--link issue4". See docs/bench.md.
RESULTS    ?= results/latest
BENCH_ARGS ?=

.PHONY: bench bench-full report

bench: $(STAMP)
	$(PY) -m bench --no-emulation --out $(call quote,$(RESULTS)) $(BENCH_ARGS)

bench-full: $(STAMP)
	$(PY) -m bench --full --out $(call quote,$(RESULTS)) $(BENCH_ARGS)

report: $(STAMP)
	$(PY) -m reports $(call quote,$(RESULTS))

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
