// The JSON reader and writer and the safetensors reader of tsexport_native_check.cpp (included by it).
#pragma once

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------------------------
// A minimal JSON reader (objects keep their order) and writer.

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* get(const std::string& key) const {
    if (kind != Object) return nullptr;
    for (const auto& m : members) {
      if (m.first == key) return &m.second;
    }
    return nullptr;
  }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}

  Json parse() {
    Json v = value(0);
    space();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("invalid JSON at offset " + std::to_string(i_) + ": " + what);
  }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) == 0) {
      i_ += n;
      return true;
    }
    return false;
  }
  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') cp |= c - '0';
      else if (c >= 'a' && c <= 'f') cp |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') cp |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return cp;
  }
  std::string string() {
    if (s_[i_] != '"') fail("expected a string");
    ++i_;
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
            i_ += 2;
            uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    return out;
  }
  Json value(int depth) {
    if (depth > 64) fail("nested too deeply");
    space();
    if (i_ >= s_.size()) fail("unexpected end");
    Json v;
    char c = s_[i_];
    if (c == '{') {
      v.kind = Json::Object;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return v;
      }
      while (true) {
        space();
        std::string key = string();
        space();
        if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
        ++i_;
        v.members.emplace_back(key, value(depth + 1));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return v;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::Array;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return v;
      }
      while (true) {
        v.items.push_back(value(depth + 1));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return v;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::String;
      v.text = string();
      return v;
    }
    if (literal("true")) {
      v.kind = Json::Bool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.kind = Json::Bool;
      return v;
    }
    if (literal("null")) return v;
    if (literal("NaN")) {  // Python's json.dumps writes these
      v.kind = Json::Number;
      v.number = std::numeric_limits<double>::quiet_NaN();
      return v;
    }
    if (literal("Infinity")) {
      v.kind = Json::Number;
      v.number = std::numeric_limits<double>::infinity();
      return v;
    }
    if (literal("-Infinity")) {
      v.kind = Json::Number;
      v.number = -std::numeric_limits<double>::infinity();
      return v;
    }
    size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || std::strchr("+-.eE", s_[i_]))) ++i_;
    if (start == i_) fail("unexpected character");
    v.kind = Json::Number;
    try {
      v.number = std::stod(s_.substr(start, i_ - start));
    } catch (const std::exception&) {
      fail("bad number");
    }
    return v;
  }
};

static std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

static std::string number(double x) {
  if (!std::isfinite(x)) return "null";  // strict JSON: an infinite error (NaN on one side) is written as null
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.9g", x);
  return buffer;
}

static std::string write(const Json& v) {
  switch (v.kind) {
    case Json::Null: return "null";
    case Json::Bool: return v.boolean ? "true" : "false";
    case Json::Number: return number(v.number);
    case Json::String: return quote(v.text);
    case Json::Array: {
      std::string out = "[";
      for (size_t k = 0; k < v.items.size(); ++k) out += (k ? "," : "") + write(v.items[k]);
      return out + "]";
    }
    case Json::Object: {
      std::string out = "{";
      for (size_t k = 0; k < v.members.size(); ++k) {
        out += (k ? "," : "") + quote(v.members[k].first) + ":" + write(v.members[k].second);
      }
      return out + "}";
    }
  }
  return "null";
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors

struct SafeTensors {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

static at::ScalarType safetensors_dtype(const std::string& name) {
  if (name == "F64") return at::kDouble;
  if (name == "F32") return at::kFloat;
  if (name == "F16") return at::kHalf;
  if (name == "BF16") return at::kBFloat16;
  if (name == "I64") return at::kLong;
  if (name == "I32") return at::kInt;
  if (name == "I16") return at::kShort;
  if (name == "I8") return at::kChar;
  if (name == "U8") return at::kByte;
  if (name == "BOOL") return at::kBool;
  throw std::runtime_error("unsupported safetensors dtype " + name);
}

static SafeTensors read_safetensors(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + path);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < 8) throw std::runtime_error(path + " is not a safetensors file (shorter than 8 bytes)");
  uint64_t length = 0;
  for (int k = 7; k >= 0; --k) length = (length << 8) | static_cast<unsigned char>(bytes[k]);
  if (length > bytes.size() - 8) throw std::runtime_error(path + ": the header length " + std::to_string(length) + " exceeds the file");
  Json header = JsonReader(bytes.substr(8, length)).parse();
  if (header.kind != Json::Object) throw std::runtime_error(path + ": the header is not a JSON object");
  size_t base = 8 + length;
  size_t data_size = bytes.size() - base;
  SafeTensors out;
  for (const auto& member : header.members) {
    const Json& entry = member.second;
    if (member.first == "__metadata__") {
      for (const auto& m : entry.members) {
        if (m.second.kind == Json::String) out.metadata[m.first] = m.second.text;
      }
      continue;
    }
    const Json* dtype = entry.get("dtype");
    const Json* shape = entry.get("shape");
    const Json* offsets = entry.get("data_offsets");
    if (!dtype || dtype->kind != Json::String || !shape || shape->kind != Json::Array || !offsets ||
        offsets->kind != Json::Array || offsets->items.size() != 2) {
      throw std::runtime_error(path + ": tensor " + member.first + " lacks dtype, shape or data_offsets");
    }
    auto type = safetensors_dtype(dtype->text);
    std::vector<int64_t> sizes;
    int64_t count = 1;
    for (const auto& d : shape->items) {
      sizes.push_back(static_cast<int64_t>(d.number));
      count *= sizes.back();
    }
    auto begin = static_cast<size_t>(offsets->items[0].number);
    auto end = static_cast<size_t>(offsets->items[1].number);
    size_t element = c10::elementSize(type);
    if (end < begin || end > data_size || end - begin != static_cast<size_t>(count) * element) {
      throw std::runtime_error(path + ": tensor " + member.first + " has data_offsets that do not fit its shape or the file");
    }
    auto tensor = torch::empty(sizes, torch::TensorOptions().dtype(type));
    if (count > 0) std::memcpy(tensor.data_ptr(), bytes.data() + base + begin, end - begin);
    out.tensors[member.first] = tensor;
  }
  return out;
}

