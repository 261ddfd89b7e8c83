// meshstream example subscriber in C++17, on libzmq's C API (zmq.h). Protocol: docs/PROTOCOL.md, v1.
//
// Build:  g++ -std=c++17 -O2 subscriber.cpp -lzmq -o meshstream_subscriber
// Run:    ./meshstream_subscriber tcp://127.0.0.1:5556 [frame_count]
//
// It subscribes to the topology and to frames, checks each message against the protocol
// (version, framing, dtype, shape and byte counts), and prints one line per message:
//   meta seq=<n> body_model=<id> joints=<24> parents=<24> faces=<F> fx=<..> width=<..> height=<..>
//   frame seq=<n> index=<i> people=<P> [id=<..> kp0=<x>,<y>,<vis>] [vertices=<P>x<V> <dtype> v0=<x>,<y>,<z>]
// A malformed message is reported on stderr and skipped; the subscriber keeps running.
// The JSON reader below is just enough for the header; use your own JSON library in real code.

#include <zmq.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace json {

// A parsed JSON value: null, bool, number, string, array or object.
struct Value {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool boolean = false;
    double number = 0.0;
    std::string text;
    std::vector<Value> items;
    std::map<std::string, Value> fields;

    bool has(const std::string& key) const { return kind == Object && fields.count(key) > 0; }
    const Value& operator[](const std::string& key) const {
        auto it = fields.find(key);
        if (kind != Object || it == fields.end()) throw std::runtime_error("header lacks field '" + key + "'");
        return it->second;
    }
};

class Reader {
public:
    explicit Reader(const std::string& source) : s_(source) {}
    Value parse() {
        Value v = value();
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    const std::string& s_;
    size_t i_ = 0;

    [[noreturn]] void fail(const char* what) {
        throw std::runtime_error(std::string("header is not valid JSON: ") + what + " at byte " + std::to_string(i_));
    }
    void space() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
    bool take(char c) { space(); if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; } return false; }
    void expect(char c) { if (!take(c)) fail("unexpected character"); }

    Value value() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        char c = s_[i_];
        Value v;
        if (c == '{') {
            ++i_;
            v.kind = Value::Object;
            if (take('}')) return v;
            do {
                space();
                std::string key = string();
                expect(':');
                v.fields[key] = value();
            } while (take(','));
            expect('}');
        } else if (c == '[') {
            ++i_;
            v.kind = Value::Array;
            if (take(']')) return v;
            do { v.items.push_back(value()); } while (take(','));
            expect(']');
        } else if (c == '"') {
            v.kind = Value::String;
            v.text = string();
        } else if (s_.compare(i_, 4, "true") == 0) { i_ += 4; v.kind = Value::Bool; v.boolean = true; }
        else if (s_.compare(i_, 5, "false") == 0) { i_ += 5; v.kind = Value::Bool; }
        else if (s_.compare(i_, 4, "null") == 0) { i_ += 4; }
        else {
            const char* start = s_.c_str() + i_;
            char* end = nullptr;
            v.kind = Value::Number;
            v.number = std::strtod(start, &end);
            if (end == start) fail("bad number");
            i_ += static_cast<size_t>(end - start);
        }
        return v;
    }

    std::string string() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c != '\\') { out += c; continue; }
            if (i_ >= s_.size()) fail("bad escape");
            char e = s_[i_++];
            switch (e) {
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'u': {  // keep it simple: ASCII code points only, others become '?'
                    if (i_ + 4 > s_.size()) fail("bad \\u escape");
                    long code = std::strtol(s_.substr(i_, 4).c_str(), nullptr, 16);
                    out += code < 128 ? static_cast<char>(code) : '?';
                    i_ += 4;
                    break;
                }
                default: out += e;  // \" \\ \/
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
};

}  // namespace json

// One received buffer described by the header's "arrays" entry.
struct Array {
    std::string name, dtype;
    std::vector<size_t> shape;
    const unsigned char* data = nullptr;
    size_t bytes = 0;
    size_t count() const { size_t n = 1; for (size_t d : shape) n *= d; return n; }
};

// Wire dtypes (little-endian) and their sizes; anything else is a protocol error.
static size_t itemsize(const std::string& dtype) {
    static const std::map<std::string, size_t> sizes = {
        {"float32", 4}, {"float16", 2}, {"float64", 8}, {"int32", 4}, {"int64", 8}, {"int16", 2},
        {"uint8", 1}, {"uint16", 2}, {"uint32", 4}};
    auto it = sizes.find(dtype);
    if (it == sizes.end()) throw std::runtime_error("dtype '" + dtype + "' is not allowed");
    return it->second;
}

static bool host_is_little_endian() { const uint16_t one = 1; unsigned char b; std::memcpy(&b, &one, 1); return b == 1; }

// Little-endian bytes -> host integer of `size` bytes.
static uint64_t read_le(const unsigned char* p, size_t size) {
    uint64_t v = 0;
    for (size_t k = 0; k < size; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * k);
    return v;
}

static float half_to_float(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) bits = sign;
        else {  // subnormal half -> normal float
            int e = -1;
            uint32_t m = mantissa;
            do { ++e; m <<= 1; } while ((m & 0x400u) == 0);
            bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (m & 0x3FFu) << 13;
        }
    } else if (exponent == 0x1F) bits = sign | 0x7F800000u | mantissa << 13;
    else bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Element i of a float32/float16 array as a float (endian-safe).
static float element(const Array& a, size_t i) {
    if (a.dtype == "float32") {
        uint32_t bits = static_cast<uint32_t>(read_le(a.data + 4 * i, 4));
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
    if (a.dtype == "float16") return half_to_float(static_cast<uint16_t>(read_le(a.data + 2 * i, 2)));
    throw std::runtime_error("array '" + a.name + "' is not float32/float16");
}

// Parse and check [topic, header, *buffers]; throws std::runtime_error naming the problem.
static std::vector<Array> check_message(const json::Value& header, std::deque<zmq_msg_t>& parts) {
    if (!header.has("v") || header["v"].number != 1) throw std::runtime_error("protocol version is not 1");
    const std::string kind = header["kind"].text;
    if (kind != "frame" && kind != "meta" && kind != "end") throw std::runtime_error("unknown kind '" + kind + "'");
    const json::Value& specs = header["arrays"];
    if (specs.kind != json::Value::Array || specs.items.size() != parts.size() - 2)
        throw std::runtime_error("header lists " + std::to_string(specs.items.size()) + " arrays but " +
                                 std::to_string(parts.size() - 2) + " buffers follow");
    std::vector<Array> arrays;
    for (size_t k = 0; k < specs.items.size(); ++k) {
        const json::Value& spec = specs.items[k];
        Array a;
        a.name = spec["name"].text;
        a.dtype = spec["dtype"].text;
        for (const json::Value& d : spec["shape"].items) a.shape.push_back(static_cast<size_t>(d.number));
        a.data = static_cast<const unsigned char*>(zmq_msg_data(&parts[k + 2]));
        a.bytes = zmq_msg_size(&parts[k + 2]);
        if (a.bytes != a.count() * itemsize(a.dtype))
            throw std::runtime_error("array '" + a.name + "' has " + std::to_string(a.bytes) + " bytes, expected " +
                                     std::to_string(a.count() * itemsize(a.dtype)));
        arrays.push_back(a);
    }
    return arrays;
}

static const Array* find(const std::vector<Array>& arrays, const char* name) {
    for (const Array& a : arrays) if (a.name == name) return &a;
    return nullptr;
}

int main(int argc, char** argv) {
    const char* address = argc > 1 ? argv[1] : "tcp://127.0.0.1:5556";
    const long wanted = argc > 2 ? std::atol(argv[2]) : -1;
    if (!host_is_little_endian()) std::fprintf(stderr, "note: big-endian host, converting from little-endian\n");

    void* context = zmq_ctx_new();
    void* socket = zmq_socket(context, ZMQ_SUB);
    const int timeout_ms = 10000, linger_ms = 0;
    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    if (zmq_connect(socket, address) != 0) {
        std::fprintf(stderr, "cannot connect to %s: %s\n", address, zmq_strerror(zmq_errno()));
        return 2;
    }
    zmq_setsockopt(socket, ZMQ_SUBSCRIBE, "meshstream.meta", std::strlen("meshstream.meta"));  // topology, also on joining
    zmq_setsockopt(socket, ZMQ_SUBSCRIBE, "meshstream.frame", std::strlen("meshstream.frame"));

    long frames = 0;
    while (wanted < 0 || frames < wanted) {
        // 1. Receive every part of one multipart message.
        std::deque<zmq_msg_t> parts;  // a deque never moves its elements: zmq_msg_t must not be copied
        bool more = true;
        while (more) {
            parts.emplace_back();
            zmq_msg_init(&parts.back());
            if (zmq_msg_recv(&parts.back(), socket, 0) < 0) {
                std::fprintf(stderr, "nothing received for %d ms: %s\n", timeout_ms, zmq_strerror(zmq_errno()));
                for (auto& p : parts) zmq_msg_close(&p);
                zmq_close(socket);
                zmq_ctx_term(context);
                return 1;
            }
            more = zmq_msg_more(&parts.back()) != 0;
        }
        // 2. Check it against the protocol and print it; a bad message is reported and skipped.
        try {
            if (parts.size() < 2) throw std::runtime_error("fewer than 2 parts");
            const std::string topic(static_cast<const char*>(zmq_msg_data(&parts[0])), zmq_msg_size(&parts[0]));
            const std::string text(static_cast<const char*>(zmq_msg_data(&parts[1])), zmq_msg_size(&parts[1]));
            const json::Value header = json::Reader(text).parse();
            const std::vector<Array> arrays = check_message(header, parts);
            const long seq = static_cast<long>(header["seq"].number);
            if (header["kind"].text == "end") {  // the publisher has finished: seq frames were published
                std::printf("end seq=%ld reason=%s\n", seq, header.has("reason") ? header["reason"].text.c_str() : "");
                std::fflush(stdout);
                for (auto& p : parts) zmq_msg_close(&p);
                break;
            }
            if (header["kind"].text == "meta") {
                const Array* faces = find(arrays, "faces");
                const json::Value& model = header["body_model"];
                std::printf("meta seq=%ld body_model=%s joints=%zu parents=%zu faces=%zu fx=%.3f width=%d height=%d\n", seq,
                            model.kind == json::Value::String ? model.text.c_str() : "none",
                            header["joint_names"].items.size(), header["parents"].items.size(),
                            faces ? faces->shape[0] : 0, header["intrinsics"]["fx"].number,
                            static_cast<int>(header["intrinsics"]["width"].number),
                            static_cast<int>(header["intrinsics"]["height"].number));
            } else {
                const json::Value& people = header["people"];
                std::printf("frame seq=%ld index=%ld people=%zu", seq, static_cast<long>(header["frame_index"].number),
                            people.items.size());
                const Array* keypoints = find(arrays, "keypoints");
                if (keypoints && !people.items.empty())
                    std::printf(" id=%ld kp0=%.3f,%.3f,%.3f", static_cast<long>(people.items[0]["id"].number),
                                element(*keypoints, 0), element(*keypoints, 1), element(*keypoints, 2));
                const Array* vertices = find(arrays, "vertices");
                if (vertices && !people.items.empty())
                    std::printf(" vertices=%zux%zu %s v0=%.3f,%.3f,%.3f", vertices->shape[0], vertices->shape[1],
                                vertices->dtype.c_str(), element(*vertices, 0), element(*vertices, 1), element(*vertices, 2));
                std::printf("\n");
                ++frames;
            }
            std::fflush(stdout);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "malformed message skipped: %s\n", e.what());
        }
        for (auto& p : parts) zmq_msg_close(&p);
    }
    zmq_close(socket);
    zmq_ctx_term(context);
    return 0;
}
