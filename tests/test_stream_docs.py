"""docs/PROTOCOL.md and the C++ example subscriber, checked against the implementation."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream import protocol
from stream.publisher import Publisher
from tests.stream_helpers import ROOT, free_port

DOC = (ROOT / "docs" / "PROTOCOL.md").read_text()
EXAMPLE = ROOT / "docs" / "examples" / "subscriber.cpp"


def _table_rows(section_title: str) -> list[list[str]]:
    """Rows (cells without backticks) of the first table after a heading containing the title."""
    section = DOC.split(section_title, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]  # without the header row


def test_protocol_doc_states_this_version_topics_and_dtypes():
    assert DOC.startswith(f"# meshstream wire protocol, version {protocol.PROTOCOL_VERSION}")
    for topic in (protocol.FRAME_TOPIC, protocol.META_TOPIC):
        assert f"`{topic}`" in DOC
    doc_dtypes = {row[0]: int(row[1]) for row in _table_rows("Allowed `dtype` values")}
    assert doc_dtypes == {name: dt.itemsize for name, dt in protocol.DTYPES.items()}


def test_protocol_doc_lists_every_header_field_and_person_array():
    common = {row[0] for row in _table_rows("## 3. Header fields")}
    frame = {name.strip("` ") for row in _table_rows("## 4. Frame messages") for name in row[0].split(",")}
    meta = {row[0] for row in _table_rows("## 5. Meta messages")}
    assert set(protocol.FRAME_FIELDS) <= common | frame
    assert set(protocol.META_FIELDS) <= common | meta
    from stream.frames import Intrinsics

    fields, _ = protocol.meta_message(None, Intrinsics(1.0, 1.0, 0.5, 0.5, 2, 2))
    assert set(fields) | {"meta_interval_s"} == meta  # the publisher adds meta_interval_s
    arrays = {row[0]: row[1] for row in _table_rows("Per-person arrays")}
    assert set(arrays) == set(protocol.PERSON_ARRAYS)
    for name, spec in protocol.PERSON_ARRAYS.items():
        dims = [d.strip() for d in arrays[name].strip("()").split(",")][1:]
        assert [None if not d.isdigit() else int(d) for d in dims] == list(spec.shape), name


def test_the_example_header_in_the_doc_decodes_with_the_stated_buffer_sizes():
    example = re.search(r"```json\n(.*?)```", DOC, re.S).group(1)
    header = json.loads(example)
    stated = DOC.split("followed by seven buffers of")[1].split("bytes")[0]  # "396, 12, ... and 82,308 "
    sizes = [int(s.replace(",", "")) for s in re.findall(r"\d+(?:,\d{3})*", stated)]
    assert len(sizes) == len(header["arrays"])
    message = protocol.decode([b"meshstream.frame", example.encode(), *(bytes(n) for n in sizes)])
    assert message["vertices"].shape == (1, 13718, 3)


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory):
    """The C++ example built against the libzmq that pyzmq bundles (skipped without g++)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    build = tmp_path_factory.mktemp("cpp")
    package = Path(zmq.__file__).resolve().parent
    libs = sorted(package.parent.glob("pyzmq.libs/libzmq*.so*")) or sorted(package.glob("**/libzmq*.so*"))
    if not libs:
        pytest.skip("pyzmq has no bundled libzmq to link against")
    # zmq.h is not installed here: write the few declarations the example uses, with pyzmq's constants.
    (build / "zmq.h").write_text(f"""#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {{
#endif
#define ZMQ_SUB {zmq.SUB}
#define ZMQ_SUBSCRIBE {zmq.SUBSCRIBE}
#define ZMQ_RCVTIMEO {zmq.RCVTIMEO}
#define ZMQ_LINGER {zmq.LINGER}
typedef struct zmq_msg_t {{ unsigned char _[64]; }} __attribute__((aligned(8))) zmq_msg_t;
void *zmq_ctx_new(void); int zmq_ctx_term(void *context);
void *zmq_socket(void *context, int type); int zmq_close(void *socket);
int zmq_setsockopt(void *socket, int option, const void *value, size_t size);
int zmq_connect(void *socket, const char *address);
int zmq_msg_init(zmq_msg_t *msg); int zmq_msg_recv(zmq_msg_t *msg, void *socket, int flags);
void *zmq_msg_data(zmq_msg_t *msg); size_t zmq_msg_size(const zmq_msg_t *msg);
int zmq_msg_more(const zmq_msg_t *msg); int zmq_msg_close(zmq_msg_t *msg);
int zmq_errno(void); const char *zmq_strerror(int errnum);
#ifdef __cplusplus
}}
#endif
""")
    binary = build / "subscriber"
    lib = libs[0]
    result = subprocess.run([compiler, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{build}", str(EXAMPLE),
                             str(lib), f"-Wl,-rpath,{lib.parent}", "-o", str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return binary


def test_cpp_example_decodes_what_the_python_publisher_sends(example_binary):
    address = f"tcp://127.0.0.1:{free_port()}"
    with Publisher(address, meta_interval_s=60) as pub:
        pub.set_meta({"body_model": "meshstream-test", "joint_names": ["j"] * 24, "parents": [-1] + [0] * 23,
                      "intrinsics": {"fx": 512.5, "fy": 512.5, "cx": 320, "cy": 240, "width": 640, "height": 480}},
                     [("faces", np.arange(36, dtype=np.int32).reshape(12, 3))])
        proc = subprocess.Popen([str(example_binary), address, "-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert pub.wait_for_subscriber(10)
        time.sleep(0.2)
        rng = np.random.default_rng(1)
        keypoints = rng.uniform(0, 600, (2, 33, 3)).astype(np.float32)
        vertices = rng.uniform(-2, 2, (2, 50, 3)).astype(np.float32)
        people = [{"id": 4, "score": 0.9, "bbox": [1, 2, 3, 4]}, {"id": 5, "score": 0.8, "bbox": [5, 6, 7, 8]}]
        for i, dtype in enumerate(["float32", "bad", "float16", "float32"]):
            fields = {"frame_index": 10 + i, "pts_s": i / 30, "t_capture_ns": time.monotonic_ns(), "people": people}
            if dtype == "bad":  # a malformed message in between: wrong byte count
                raw = protocol.encode(protocol.FRAME_TOPIC, {"kind": "frame", "seq": 99, **fields, "t_publish_ns": 0},
                                      [("keypoints", keypoints)])
                pub._handover([bytes(raw[0]), bytes(raw[1]), bytes(raw[2])[:-4]])
                continue
            pub.publish(fields, [("keypoints", keypoints), ("vertices", vertices.astype(dtype))])
        assert pub.end_of_stream("finished")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "meta seq=0 body_model=meshstream-test joints=24 parents=24 faces=12 fx=512.500 width=640 height=480"
    kp = "{:.3f},{:.3f},{:.3f}".format(*keypoints[0, 0])
    for line, seq, index, dtype in zip(lines[1:], (0, 1, 2), (10, 12, 13), ("float32", "float16", "float32")):
        v0 = vertices[0, 0].astype(dtype).astype(np.float32)
        assert line == (f"frame seq={seq} index={index} people=2 id=4 kp0={kp} vertices=2x50 {dtype} "
                        f"v0={v0[0]:.3f},{v0[1]:.3f},{v0[2]:.3f}")
    assert lines[4:] == ["end seq=3 reason=finished"]  # it stops on the end message, not by timeout
    assert "malformed message skipped: array 'keypoints' has 788 bytes, expected 792" in err


def test_protocol_doc_lists_the_world_header_object():
    documented = {row[0] for row in _table_rows("The `world` header object")}
    assert documented == set(protocol.NESTED_TYPES["world"])
    assert "| 1 | 1.2 |" in DOC and protocol.FIELD_TYPES["frame"]["world"] == "object"
