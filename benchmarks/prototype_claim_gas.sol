// SPDX-License-Identifier: MIT
// A prototype, not deployed: the claim of contracts/BlockFL.sol beside a Merkle-sum design, for
// benchmarks/prototype_claim_gas.py to measure side by side.
pragma solidity ^0.8.24;
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

contract Proto is ERC20 {
    struct Leaf { uint32 index; address device; uint64 round; bytes32 baseModelHash; bytes32 updateHash; uint64 samples; uint64 computeTimeMs; }
    struct StoredBlock { bytes32 blockHash; bytes32 globalModelHash; bytes32 updatesRoot; address miner; uint32 numUpdates; uint64 totalSamples; }
    event UpdateAccepted(uint64 indexed round, address indexed device, bytes32 updateHash, uint64 samples, uint256 reward);
    uint8 private _mode = 2; bool private _allowList; uint64 private _maxSamples = 1_000_000; uint128 private _rewardPerSample = 1e16;
    mapping(address => bool) public isDeviceAllowed;
    mapping(uint64 => StoredBlock) private _blocks;
    mapping(uint64 => mapping(uint256 => uint256)) private _claimed;
    mapping(uint64 => bytes32) private _commitment;
    mapping(address => mapping(uint256 => uint256)) private _deviceClaimed;
    uint256 private constant CLAIMED_SAMPLES_BITS = 64;
    constructor() ERC20("T", "T") {}

    function leafHash(Leaf calldata leaf) public pure returns (bytes32) { return keccak256(bytes.concat(keccak256(abi.encode(leaf)))); }
    function setOld(uint64 round, bytes32 root, uint32 count, uint64 total) external {
        _blocks[round] = StoredBlock(bytes32(uint256(1)), bytes32(uint256(2)), root, msg.sender, count, total);
    }
    function setNew(uint64 round, bytes32 c) external { _commitment[round] = c; }

    // today's _claim, copied for the measurement
    function claimOld(uint64 round, Leaf calldata leaf, bytes32[] calldata proof) external {
        if (_mode != 2) revert();
        if (leaf.round != round) revert();
        StoredBlock storage b = _blocks[round];
        bytes32 root = b.updatesRoot;
        if (root == bytes32(0)) revert();
        (uint32 count, uint64 total) = (b.numUpdates, b.totalSamples);
        if (leaf.index >= count) revert();
        uint256 position = uint256(leaf.index) + CLAIMED_SAMPLES_BITS;
        uint256 word = position >> 8;
        uint256 bit = 1 << (position & 0xff);
        mapping(uint256 => uint256) storage claimed = _claimed[round];
        uint256 bits = claimed[word];
        if (bits & bit != 0) revert();
        if (!MerkleProof.verifyCalldata(proof, root, leafHash(leaf))) revert();
        if (_allowList && !isDeviceAllowed[leaf.device]) revert();
        if (leaf.samples == 0 || leaf.samples > _maxSamples) revert();
        uint256 first = word == 0 ? bits | bit : claimed[0];
        uint256 sum = uint64(first) + uint256(leaf.samples);
        if (sum > total) revert();
        claimed[0] = (first >> CLAIMED_SAMPLES_BITS << CLAIMED_SAMPLES_BITS) | sum;
        if (word != 0) claimed[word] = bits | bit;
        uint256 reward = uint256(leaf.samples) * _rewardPerSample;
        _mint(leaf.device, reward);
        emit UpdateAccepted(round, leaf.device, leaf.updateHash, leaf.samples, reward);
    }

    // a Merkle-sum tree (each child's hash bound beside its own sum), a claimed bit per device per
    // 256 rounds, one stored word keccak(root, count, total) per block
    function claimNew(uint64 round, Leaf calldata leaf, bytes32[] calldata proof, bytes calldata sums,
                      uint32 count, uint64 total) external {
        if (_mode != 2) revert();
        if (leaf.round != round) revert();
        if (leaf.index >= count) revert();
        if (sums.length != proof.length * 4) revert();
        bytes32 h = leafHash(leaf);
        uint256 s = leaf.samples;
        assembly ("memory-safe") {
            let m := mload(0x40)
            let p := proof.offset
            let q := sums.offset
            for { let end := add(p, shl(5, proof.length)) } lt(p, end) { p := add(p, 0x20) q := add(q, 4) } {
                let sib := calldataload(p)
                let ss := shr(224, calldataload(q))
                switch lt(h, sib)
                case 1 { mstore(m, h) mstore(add(m, 0x20), s) mstore(add(m, 0x40), sib) mstore(add(m, 0x60), ss) }
                default { mstore(m, sib) mstore(add(m, 0x20), ss) mstore(add(m, 0x40), h) mstore(add(m, 0x60), s) }
                h := keccak256(m, 0x80)
                s := add(s, ss)
            }
        }
        if (s != total) revert();
        if (keccak256(abi.encode(h, count, total)) != _commitment[round]) revert();
        uint256 word = round >> 8;
        uint256 bit = 1 << (round & 0xff);
        mapping(uint256 => uint256) storage mine = _deviceClaimed[leaf.device];
        uint256 bits = mine[word];
        if (bits & bit != 0) revert();
        if (_allowList && !isDeviceAllowed[leaf.device]) revert();
        if (leaf.samples == 0 || leaf.samples > _maxSamples) revert();
        mine[word] = bits | bit;
        uint256 reward = uint256(leaf.samples) * _rewardPerSample;
        _mint(leaf.device, reward);
        emit UpdateAccepted(round, leaf.device, leaf.updateHash, leaf.samples, reward);
    }
}
