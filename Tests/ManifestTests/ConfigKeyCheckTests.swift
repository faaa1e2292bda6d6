import Manifest
import XCTest

/// `ConfigKeyCheck`'s typo policy over a config class's declared keys.
final class ConfigKeyCheckTests: XCTestCase {
    let declared: Set<String> = ["hidden_size", "num_attention_heads", "vocab_size", "dim", "_attn_implementation", "n_head"]

    func testNearKeysAreTyposAndFarOrDeclaredKeysAreNot() {
        XCTAssertEqual(ConfigKeyCheck.intended("hiden_size", declared: declared), "hidden_size")  // one deletion
        XCTAssertEqual(ConfigKeyCheck.intended("hidden_sizee", declared: declared), "hidden_size")
        XCTAssertEqual(ConfigKeyCheck.intended("vocab_szie", declared: declared), "vocab_size")  // a swap is one edit
        XCTAssertEqual(ConfigKeyCheck.intended("num_atention_head", declared: declared), "num_attention_heads")  // two
        XCTAssertNil(ConfigKeyCheck.intended("num_atenton_head", declared: declared))  // three edits: far
        XCTAssertEqual(ConfigKeyCheck.intended("dimm", declared: declared), "dim")
        XCTAssertNil(ConfigKeyCheck.intended("dmx", declared: declared), "a key of four letters or fewer allows one edit")
        XCTAssertNil(ConfigKeyCheck.intended("hidden_size", declared: declared))
        XCTAssertNil(ConfigKeyCheck.intended("attn_implementation", declared: declared), "stored as _attn_implementation")
        XCTAssertNil(ConfigKeyCheck.intended("decoder_start_token_id", declared: declared))
    }
}
